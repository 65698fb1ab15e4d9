"""The vision-language path's builder (registered as ``vl`` in :mod:`mm_gmpo.policy_paths`).

Config fields read here: ``model.dtype``, ``model.trust_remote_code``,
``model.freeze_vision_tower``, ``model.min_pixels`` / ``model.max_pixels`` (None: EasyR1's
262,144 / 4,194,304 for a real model; a ``tiny:`` model keeps its own tiny budget),
``data.template``, ``data.max_prompt_len``, ``data.max_images_per_prompt`` (also vLLM's
per-prompt image limit, through the path's request builder), ``train.logit_chunk``.
Activation checkpointing is the training engine's (``build_engine``), as on the text path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from mm_gmpo.dtypes import resolve_dtype
from mm_gmpo.policy_paths import PathParts
from mm_gmpo.vl.model import (
    EASYR1_MAX_PIXELS,
    EASYR1_MIN_PIXELS,
    load_vl_model,
    load_vl_model_skeleton,
    load_vl_processor,
)
from mm_gmpo.vl.path import VLPolicyPath

if TYPE_CHECKING:
    from mm_gmpo.train.config import Config, ModelConfig

# Imported lazily while a run builds prompts; checked before any model loads.
REQUIRED_PACKAGES = ("qwen_vl_utils", "torchvision")


def pixel_budget(model_cfg: ModelConfig) -> tuple[int | None, int | None]:
    """(min_pixels, max_pixels) for the processor; ``None`` keeps the checkpoint's own.

    Real models default to EasyR1's budget; a ``tiny:`` model keeps the budget it was saved
    with (4..16 tokens per image), which is what makes the CPU demo and the tests fast.
    """
    tiny = str(model_cfg.path).startswith("tiny:")
    low, high = model_cfg.min_pixels, model_cfg.max_pixels
    if low is None and not tiny:
        low = EASYR1_MIN_PIXELS
    if high is None and not tiny:
        high = EASYR1_MAX_PIXELS
    return low, high


def load_model(cfg: Config, model_dir: str | Path) -> nn.Module:
    """Qwen2.5-VL on the CPU in ``model.dtype``, the vision tower frozen if asked."""
    return load_vl_model(
        model_dir,
        resolve_dtype(cfg.model.dtype),
        freeze_vision=cfg.model.freeze_vision_tower,
        trust_remote_code=cfg.model.trust_remote_code,
    )


def build_parts(cfg: Config, model_dir: str | Path, *, weights: bool = True) -> PathParts:
    """Processor, model, :class:`VLPolicyPath` (its ``vllm_requests()`` serves vLLM) and its generate collator.

    The processor is the run's saveable "tokenizer": checkpoints save it whole, so
    ``AutoProcessor`` reloads the same pixel budget.
    """
    low, high = pixel_budget(cfg.model)
    processor = load_vl_processor(model_dir, low, high, trust_remote_code=cfg.model.trust_remote_code)
    if weights:
        model = load_model(cfg, model_dir)
    else:
        model = load_vl_model_skeleton(model_dir, trust_remote_code=cfg.model.trust_remote_code)
    path = VLPolicyPath(
        processor,
        model,
        cfg.data.template,
        cfg.data.max_prompt_len,
        logit_chunk=cfg.train.logit_chunk,
        max_images_per_prompt=cfg.data.max_images_per_prompt,
    )
    return PathParts(
        model=model,
        saveable=processor,
        tokenizer=processor.tokenizer,
        path=path,
        generate_collate=path.generate_collate(),
    )
