"""Atomic, resumable checkpoints.

A checkpoint is written into a hidden temporary directory and renamed into place only once
complete (rename is atomic on one filesystem), with a ``COMPLETE`` marker as the last file
inside. ``resume: auto`` takes the newest directory that has the marker, so a run killed while
saving resumes from the previous good one instead of a half-written one.

Layout of ``<output_dir>/checkpoints/step_00000012/``::

    model/            save_pretrained (safetensors) + tokenizer/processor: loadable as is;
                      with LoRA, peft's adapter (adapter_config.json + adapter_model.safetensors,
                      naming its base model), which ``mm-gmpo export --merge`` turns into a model
    engine/           optimizer + LR scheduler state (engine specific)
    trainer_state.pt  step, data position, RNG states
    COMPLETE
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mm_gmpo.lora import peft_model_of
from mm_gmpo.saving import save_pretrained

_STEP_DIR = re.compile(r"^step_(\d+)$")
COMPLETE = "COMPLETE"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def rng_state() -> dict[str, Any]:
    """Every RNG a step draws from, so a resumed run samples exactly what the original would."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first; half-written ones are ignored."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / COMPLETE).is_file():
            found.append((int(match.group(1)), child))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    model,
    tokenizer,
    engine,
    trainer_state: dict[str, Any],
    keep: int = 2,
    is_main: bool = True,
) -> Path:
    """Write checkpoint ``step`` atomically and prune all but the newest ``keep``."""
    root = checkpoint_root(output_dir)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}"
    if is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "engine").mkdir(parents=True)
        state_dict = engine.state_dict_for_save()
        extra = {"save_embedding_layers": False} if peft_model_of(model) is not None else {}
        save_pretrained(model, tmp / "model", state_dict=state_dict, safe_serialization=True, **extra)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "model")
        torch.save({**trainer_state, "step": step, "rng": rng_state()}, tmp / "trainer_state.pt")
    engine.save_state(tmp / "engine")  # every rank (DeepSpeed writes its shards)
    if is_main:
        (tmp / COMPLETE).write_text(f"{step}\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    path = Path(checkpoint)
    if not (path / COMPLETE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {COMPLETE} marker)")
    return torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False)
