"""LoRA adapters with peft: the one place a policy model is wrapped, reloaded or merged.

Why one module: training (both engines), the KL reference, checkpoints, evaluation and
``mm-gmpo export`` must agree on which modules carry adapters and on the adapter's format
(peft's own ``save_pretrained`` layout: ``adapter_config.json`` + ``adapter_model.safetensors``),
so a checkpoint written by one loads in all the others.

Config fields read here: ``model.lora_rank`` (0: full fine-tuning, nothing is wrapped),
``model.lora_alpha``, ``model.lora_dropout``, ``model.lora_target_modules`` and, on the VL path,
``model.freeze_vision_tower`` (a frozen tower never gets adapters, whatever the names match).

The wrapped model is a ``peft.PeftModel``: that is what reaches the engines, the rollout
engine's ``sync_weights`` and ``save_pretrained``. Every base weight is frozen
(``requires_grad=False``), so the optimizers (built over trainable parameters only) hold
states for the adapters alone.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from mm_gmpo.train.config import Config

ADAPTER_CONFIG = "adapter_config.json"
# Modules never adapted: the output layer (tied to the embeddings in small Qwen models, and
# called outside the model's forward by the chunked log-prob path).
NEVER_ADAPTED = ("lm_head",)


def lora_enabled(cfg: Config) -> bool:
    return cfg.model.lora_rank > 0


def is_adapter_dir(path: str | Path) -> bool:
    """A directory holding a peft adapter (``adapter_config.json``) rather than a full model."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base_dir(adapter_dir: str | Path) -> str:
    """The base model an adapter was trained on, as its ``adapter_config.json`` records it."""
    config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise FileNotFoundError(f"{adapter_dir}/{ADAPTER_CONFIG} does not name its base model")
    base_path = Path(base)
    if (base_path.is_absolute() or base_path.exists()) and not (base_path / "config.json").is_file():
        raise FileNotFoundError(
            f"{adapter_dir}: its base model {base} (adapter_config.json's base_model_name_or_path) "
            "is not a saved model directory"
        )
    return base


# Attributes under which wrappers keep the policy: DeepSpeed / DDP (``module``), torch.compile.
_WRAPPER_ATTRS = ("module", "_orig_mod")


def peft_model_of(model: nn.Module) -> Any | None:
    """The ``PeftModel`` itself, also inside DeepSpeed / DDP / torch.compile wrappers; else None.

    peft not imported yet means no module of this process can be a peft model, so plain runs
    never import it (this is asked at every weight sync and checkpoint).
    """
    if "peft" not in sys.modules:
        return None
    from peft import PeftModel

    while not isinstance(model, PeftModel):
        inner = next(
            (getattr(model, a) for a in _WRAPPER_ATTRS if isinstance(getattr(model, a, None), nn.Module)),
            None,
        )
        if inner is None:
            return None
        model = inner
    return model


def _vision_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Module-name prefixes of a VL model's vision tower (empty for a text model)."""
    names = [name for name, _ in model.named_modules() if name.split(".")[-1] == "visual"]
    return tuple(f"{name}." for name in names)


def _matches(name: str, target: str) -> bool:
    """peft's rule for a list of targets: the full name, or a suffix at a module boundary."""
    return name == target or name.endswith(f".{target}")


def resolve_targets(cfg: Config, model: nn.Module) -> list[str]:
    """Full names of the linear modules that get adapters; bad names are a ConfigError.

    Default (an empty ``model.lora_target_modules``): every linear layer of the language model
    (attention and MLP projections), never the output layer, never the vision tower. Named
    targets may reach the vision tower only when ``model.freeze_vision_tower`` is false.
    """
    from mm_gmpo.train.config import ConfigError

    wanted = list(cfg.model.lora_target_modules)
    vision = _vision_prefixes(model)
    frozen_vision = vision and cfg.model.freeze_vision_tower
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    allowed = [n for n in linear if n.split(".")[-1] not in NEVER_ADAPTED]
    if not wanted:
        return [n for n in allowed if not n.startswith(vision)] if vision else allowed
    if frozen_vision:
        allowed = [n for n in allowed if not n.startswith(vision)]
    unmatched = [t for t in wanted if not any(_matches(n, t) for n in allowed)]
    if unmatched:
        why = " (the vision tower is frozen: model.freeze_vision_tower=true)" if frozen_vision else ""
        raise ConfigError(
            f"model.lora_target_modules: {', '.join(map(repr, unmatched))} match no linear layer "
            f"that can take an adapter{why}; linear layers here end in "
            f"{', '.join(sorted({n.split('.')[-1] for n in allowed}))}"
        )
    return [n for n in allowed if any(_matches(n, t) for t in wanted)]


def _base_name(model: nn.Module) -> str | None:
    """The base model's directory (absolute, so an adapter loads from any working directory)."""
    name = getattr(model, "name_or_path", None)
    if name and Path(name).is_dir():
        return str(Path(name).resolve())
    return name or None


def apply_lora(cfg: Config, model: nn.Module) -> nn.Module:
    """Wrap ``model`` with fresh LoRA adapters when ``model.lora_rank > 0``; else return it as is.

    Only the adapters train: peft freezes every base weight, the vision tower included.
    """
    if not lora_enabled(cfg):
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=cfg.model.lora_rank,
        lora_alpha=cfg.model.lora_alpha,
        lora_dropout=cfg.model.lora_dropout,
        target_modules=resolve_targets(cfg, model),
        base_model_name_or_path=_base_name(model),
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft reads the deprecated `is_gradient_checkpointing` property of transformers 5.x
        # models; the warning is about peft's code, not the user's, so it is not shown.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def load_adapter(model: nn.Module, adapter_dir: str | Path, *, trainable: bool) -> nn.Module:
    """``model`` (the base) with the adapter saved in ``adapter_dir``, exactly as it was saved."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """The base model's forward through the same module (LoRA's KL reference: no second copy)."""
    peft_model = peft_model_of(model)
    if peft_model is None:
        raise ValueError(f"{type(model).__name__} carries no peft adapter to disable")
    with peft_model.disable_adapter():
        yield


def merged_model(model: nn.Module) -> nn.Module:
    """The plain transformers model with the adapter folded into its weights (a new object)."""
    peft_model = peft_model_of(model)
    if peft_model is None:
        raise ValueError(f"{type(model).__name__} carries no peft adapter to merge")
    return peft_model.merge_and_unload()
