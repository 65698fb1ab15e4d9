"""Qwen2.5-VL model and processor loading for the VL path.

Why a module of its own: the VL recipe needs three things the text path does not have, and
each is easy to get subtly wrong:

* image budget: ``min_pixels`` / ``max_pixels`` bound how many image tokens one picture costs;
  EasyR1's Geometry3K recipe uses 262,144 (512x512) and 4,194,304 (2048x2048). They are set
  on the processor so that qwen-vl-utils' resize and the processor agree (see
  :func:`processor_pixel_limits`);
* a frozen vision tower (EasyR1's ``freeze_vision_tower``): the ViT *and* its patch merger get
  ``requires_grad=False`` so the optimizer never sees them;
* left padding for batched generation (the processor's tokenizer defaults to right).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

EASYR1_MIN_PIXELS = 262_144  # 512 * 512
EASYR1_MAX_PIXELS = 4_194_304  # 2048 * 2048


def load_vl_processor(
    path: str | Path,
    min_pixels: int | None = EASYR1_MIN_PIXELS,
    max_pixels: int | None = EASYR1_MAX_PIXELS,
    trust_remote_code: bool = False,
) -> Any:
    """The model's processor with the image budget applied and left padding.

    ``None`` keeps the value saved with the checkpoint (the tiny test model saves a tiny
    budget: 4..16 image tokens).
    """
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    if min_pixels is not None or max_pixels is not None:
        saved_low, saved_high = processor_pixel_limits(processor)
        low = int(min_pixels) if min_pixels is not None else saved_low
        high = int(max_pixels) if max_pixels is not None else saved_high
        if low > high:
            raise ValueError(f"min_pixels ({low}) is larger than max_pixels ({high})")
        # transformers 5.x: the pixel budget is ``size`` (min_pixels / max_pixels are deprecated).
        processor = AutoProcessor.from_pretrained(
            path, trust_remote_code=trust_remote_code, size={"shortest_edge": low, "longest_edge": high}
        )
    processor.tokenizer.padding_side = "left"
    return processor


def processor_pixel_limits(processor: Any) -> tuple[int, int]:
    """(min_pixels, max_pixels) the processor's image processor resizes into.

    transformers 5.x stores them as ``size.shortest_edge`` / ``size.longest_edge`` (pixel
    counts despite the names); older processors keep ``min_pixels`` / ``max_pixels``.
    """
    ip = processor.image_processor
    size = getattr(ip, "size", None)
    low = getattr(size, "shortest_edge", None) if size is not None else None
    high = getattr(size, "longest_edge", None) if size is not None else None
    if isinstance(size, dict):
        low, high = size.get("shortest_edge", low), size.get("longest_edge", high)
    low = low if low is not None else getattr(ip, "min_pixels", None)
    high = high if high is not None else getattr(ip, "max_pixels", None)
    if low is None or high is None:
        raise ValueError(f"cannot read min/max pixels from {type(ip).__name__}")
    return int(low), int(high)


def vision_tower(model: nn.Module) -> nn.Module:
    """The ViT (with its patch merger) of a Qwen2.5-VL model, wherever this version keeps it."""
    inner = getattr(model, "model", model)
    tower = getattr(inner, "visual", None) or getattr(model, "visual", None)
    if tower is None:
        raise ValueError(f"{type(model).__name__} has no vision tower (.model.visual / .visual)")
    return tower


def freeze_vision_tower(model: nn.Module) -> int:
    """``requires_grad=False`` on the whole vision tower; returns how many tensors were frozen.

    Why: the VL recipe tunes the language model on top of a fixed image encoder (less memory,
    no drift of the visual features under a noisy RL signal).
    """
    frozen = 0
    for p in vision_tower(model).parameters():
        if p.requires_grad:
            p.requires_grad_(False)
            frozen += 1
    return frozen


def load_vl_model(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    *,
    freeze_vision: bool = False,
    trust_remote_code: bool = False,
) -> nn.Module:
    """``Qwen2_5_VLForConditionalGeneration`` from a hub id or a local directory."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        path, dtype=dtype, trust_remote_code=trust_remote_code
    )
    if freeze_vision:
        freeze_vision_tower(model)
    return model


def load_vl_model_skeleton(path: str | Path, *, trust_remote_code: bool = False) -> nn.Module:
    """The model's modules on the meta device: no weights, no memory.

    What the VL path reads from a model when another engine (vLLM) holds the weights: the
    config (image token, merge size, vision token ids), the mRoPE ``get_rope_index`` (config
    only) and the generation config. A 7B model costs nothing to build this way.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    from mm_gmpo.policy_paths import model_structure

    return model_structure(Qwen2_5_VLForConditionalGeneration, path, trust_remote_code)
