"""``mm-gmpo export CHECKPOINT --out DIR [--merge]``: a checkpoint's model as a directory of its own.

Why: a LoRA run's checkpoints hold peft adapters, which only load on top of their base model
with peft installed. ``--merge`` folds the adapter into the base weights and writes a plain
transformers model (safetensors, config, generation config, tokenizer or processor) that
``AutoModelForCausalLM`` / ``Qwen2_5_VLForConditionalGeneration``, vLLM or any other tool loads
as is. Without ``--merge`` the checkpoint's ``model/`` (an adapter or a full model) is copied.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mm_gmpo.lora import adapter_base_dir, is_adapter_dir, load_adapter, merged_model
from mm_gmpo.saving import save_pretrained


class ExportError(ValueError):
    """A checkpoint that cannot be exported as asked; the message says why."""


def _holds_model(path: Path) -> bool:
    return (path / "config.json").is_file() or is_adapter_dir(path)


def checkpoint_model_dir(checkpoint: str | Path) -> Path:
    """The ``model/`` of a checkpoint, given the checkpoint, its ``model/`` or a run directory
    (its newest complete checkpoint)."""
    from mm_gmpo.train.checkpoint import latest_checkpoint

    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
    if _holds_model(path):
        return path
    if _holds_model(path / "model"):
        return path / "model"
    latest = latest_checkpoint(path)
    if latest is not None and _holds_model(latest / "model"):
        return latest / "model"
    raise FileNotFoundError(
        f"{checkpoint}: not a checkpoint (no model/ with config.json or adapter_config.json inside, "
        "and no complete checkpoints/step_N/)"
    )


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, merge: bool) -> Path:
    """Write the checkpoint's model to ``out`` (merged into a plain model with ``merge``)."""
    source, out = checkpoint_model_dir(checkpoint), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"--out {out} exists and is not empty; choose a new directory")
    if not merge:
        shutil.copytree(source, out, dirs_exist_ok=True)
        return out
    if not is_adapter_dir(source):
        raise ExportError(
            f"{checkpoint}: {source} holds a full model, not a LoRA adapter (no adapter_config.json), "
            "so there is nothing to merge; it loads as it is (or drop --merge to copy it)"
        )
    model, saveable = _load_base(adapter_base_dir(source), source)
    dtype = model.dtype  # merged in float32, saved in the base model's own dtype
    merged = merged_model(load_adapter(model.float(), source, trainable=False))
    save_pretrained(merged.to(dtype), out, safe_serialization=True)
    saveable.save_pretrained(out)
    return out


def _load_base(base: str, adapter_dir: Path):
    """The base model in its saved dtype, and the tokenizer or processor saved with the adapter."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor, AutoTokenizer

    if AutoConfig.from_pretrained(base).model_type == "qwen2_5_vl":
        from transformers import Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype="auto")
        return model, AutoProcessor.from_pretrained(adapter_dir)
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    return model, AutoTokenizer.from_pretrained(adapter_dir)
