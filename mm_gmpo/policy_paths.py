"""The registry of policy paths: everything that differs between text and vision-language runs.

Training (:mod:`mm_gmpo.train.build`) and evaluation (:mod:`mm_gmpo.evaluation.generators`)
build a run's modality-specific parts through :func:`build_policy_path` and nothing else, so
the two can never load a model or a tokenizer differently, and ``train/`` never imports
``text/`` or ``vl/``. A path module (``mm_gmpo.text.build``, ``mm_gmpo.vl.build``) provides:

* ``load_model(cfg, model_dir) -> nn.Module``: the policy (or a frozen reference copy of it),
  on the CPU, in ``model.dtype``, with the path's own parameter freezing applied;
* ``build_parts(cfg, model_dir) -> PathParts``: model, tokenizer/processor, the
  :class:`PolicyPath` the loop talks to (its ``vllm_requests()`` is how the vLLM engine builds
  requests) and the ``generate`` collator;
* ``REQUIRED_PACKAGES``: what it imports lazily, checked before a run loads anything.

Modules are imported lazily: a text run never imports the VL stack (qwen-vl-utils, which
imports torchvision).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from mm_gmpo.data.records import Record
from mm_gmpo.rollout.base import PromptInput, Rollout
from mm_gmpo.train.collate import TrainBatch

if TYPE_CHECKING:
    from mm_gmpo.train.config import Config

# modality name -> module that builds it
POLICY_PATHS: dict[str, str] = {"text": "mm_gmpo.text.build", "vl": "mm_gmpo.vl.build"}


class PolicyPath(Protocol):
    """What the loop asks of a modality: prompts, collation, the forward, decoding."""

    pad_id: int
    bad_records: Counter[str]  # records refused so far, by reason (reported in the run summary)

    def build_prompt(self, record: Record) -> PromptInput: ...

    def collate(self, rollout: Rollout, rows: list[int]) -> TrainBatch: ...

    def forward(
        self, model: nn.Module, batch: TrainBatch, temperature: float, with_entropy: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def decode(self, rollout: Rollout) -> list[str]: ...

    def vllm_requests(self) -> Any:
        """This path's vLLM request builder (:class:`mm_gmpo.rollout.vllm.VLLMRequestBuilder`)."""
        ...


@dataclass
class PathParts:
    """The modality-specific parts of a run, as one path module builds them."""

    model: nn.Module  # on the CPU; the caller places it
    saveable: Any  # what checkpoints save beside the weights: tokenizer (text) or processor (vl)
    tokenizer: Any  # the text tokenizer: decoding, stop tokens, probes
    path: PolicyPath
    generate_collate: Callable[..., dict[str, torch.Tensor]] | None = None  # HFGenerateEngine(collate=)


def _module(modality: str) -> Any:
    if modality not in POLICY_PATHS:
        raise ValueError(f"modality: unknown policy path {modality!r} (known: {', '.join(POLICY_PATHS)})")
    return importlib.import_module(POLICY_PATHS[modality])


def check_policy_path(modality: str) -> None:
    """The path module and the packages it declares (``REQUIRED_PACKAGES``) can be imported.

    Asked before any model is loaded, so a missing package is one line, not a traceback from
    the middle of the first step.
    """
    from mm_gmpo.train.config import ConfigError

    try:
        module = _module(modality)
    except ImportError as exc:
        raise ConfigError(f"modality={modality} cannot be used here: {exc}") from exc
    missing = [p for p in module.REQUIRED_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(
            f"modality={modality} needs the package(s) {', '.join(missing)}, not installed here"
        )


def build_policy_path(
    cfg: Config, model_dir: str | Path, *, weights: bool = True, adapters: bool = True
) -> PathParts:
    """Model, tokenizer/processor, policy path and rollout hooks for ``cfg.modality``.

    ``weights=False`` builds the model on the meta device (config and modules, no memory): for
    an evaluation whose engine (vLLM) loads the weights itself.

    LoRA (:mod:`mm_gmpo.lora`) is applied here, so training, the KL reference and evaluation
    all see it: ``model.lora_rank > 0`` wraps the model with fresh adapters, and a
    ``model_dir`` that holds a saved adapter (a LoRA checkpoint's ``model/``) loads its base
    model plus that adapter, trainable when the run trains LoRA. ``adapters=False`` leaves a
    plain model's adapters to the caller (training adds them after the warm start).
    """
    from mm_gmpo.lora import adapter_base_dir, apply_lora, is_adapter_dir, load_adapter, lora_enabled

    module = _module(cfg.modality)
    if not is_adapter_dir(model_dir):
        parts = module.build_parts(cfg, model_dir, weights=weights)
        if weights and adapters:
            parts.model = apply_lora(cfg, parts.model)
        return parts
    if not weights:
        raise ValueError(
            f"{model_dir} holds a LoRA adapter, which this engine cannot load; "
            "write a plain model with: mm-gmpo export CHECKPOINT --merge --out DIR"
        )
    parts = module.build_parts(cfg, adapter_base_dir(model_dir), weights=True)
    parts.model = load_adapter(parts.model, model_dir, trainable=lora_enabled(cfg))
    return parts


def model_structure(
    build: Callable[[Any], nn.Module], model_dir: str | Path, trust_remote_code: bool
) -> nn.Module:
    """``build(config)`` on the meta device, with the checkpoint's generation config attached."""
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = build(config)
    try:
        model.generation_config = GenerationConfig.from_pretrained(model_dir)
    except OSError:  # no generation_config.json: the model config's defaults
        model.generation_config = GenerationConfig.from_model_config(config)
    return model


def load_policy_model(cfg: Config, model_dir: str | Path) -> nn.Module:
    """The model alone (e.g. the frozen KL reference), loaded exactly as the policy is."""
    return _module(cfg.modality).load_model(cfg, model_dir)
