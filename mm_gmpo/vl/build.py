"""Assemble the VL pieces of a run: model, processor, policy path and the generate collator.

``mm_gmpo.train.build.build_run`` calls :func:`build_vl_components` when ``cfg.path == "vl"``;
everything else (engine, loop, scorer, checkpoints, logging) is shared with the text path.

Config fields read here: ``model.min_pixels`` / ``model.max_pixels`` (None: EasyR1's 262,144 /
4,194,304 for a real model; a ``tiny:`` model keeps its own tiny budget),
``model.freeze_vision_tower``, ``model.gradient_checkpointing`` (torch engine only: DeepSpeed
turns it on itself), ``model.dtype``, ``data.template``, ``data.max_prompt_len``,
``data.max_images_per_prompt`` (also vLLM's per-prompt image limit, through the path's request
builder).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mm_gmpo.vl.model import EASYR1_MAX_PIXELS, EASYR1_MIN_PIXELS, load_vl_model, load_vl_processor
from mm_gmpo.vl.path import VLPolicyPath

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"model.dtype: auto, bf16, fp16 or fp32, got {name!r}")
    return _DTYPES[name]


def pixel_budget(cfg: Any) -> tuple[int | None, int | None]:
    """(min_pixels, max_pixels) for the processor; ``None`` keeps the checkpoint's own.

    Real models default to EasyR1's budget; a ``tiny:`` model keeps the budget it was saved
    with (4..16 tokens per image), which is what makes the CPU demo and the tests fast.
    """
    model_cfg = cfg.model
    tiny = str(model_cfg.path).startswith("tiny:")
    low = getattr(model_cfg, "min_pixels", None)
    high = getattr(model_cfg, "max_pixels", None)
    if low is None and not tiny:
        low = EASYR1_MIN_PIXELS
    if high is None and not tiny:
        high = EASYR1_MAX_PIXELS
    return low, high


def build_vl_components(
    cfg: Any, model_dir: str | Path
) -> tuple[nn.Module, Any, VLPolicyPath, Callable[..., dict[str, torch.Tensor]]]:
    """Model, processor, :class:`VLPolicyPath` and the ``HFGenerateEngine(collate=...)`` hook.

    ``model_dir`` is what ``build_run`` resolved (a tiny model's directory, a checkpoint's
    ``model/`` when resuming, or a hub id). The model is on CPU; the caller moves it.
    """
    low, high = pixel_budget(cfg)
    trust = bool(getattr(cfg.model, "trust_remote_code", False))
    processor = load_vl_processor(model_dir, low, high, trust_remote_code=trust)
    model = load_vl_model(
        model_dir,
        _dtype(cfg.model.dtype),
        freeze_vision=bool(getattr(cfg.model, "freeze_vision_tower", False)),
        # Under DeepSpeed the engine turns checkpointing on itself (the ZeRO-3-safe form).
        gradient_checkpointing=bool(getattr(cfg.model, "gradient_checkpointing", False))
        and getattr(getattr(cfg, "train", None), "engine", "torch") == "torch",
        trust_remote_code=trust,
    )
    template = getattr(cfg.data, "template", "geometry") or "geometry"
    path = VLPolicyPath(
        processor,
        model,
        template,
        int(cfg.data.max_prompt_len),
        max_images_per_prompt=cfg.data.max_images_per_prompt,
    )
    return model, processor, path, path.generate_collate()
