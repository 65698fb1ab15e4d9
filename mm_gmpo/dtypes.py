"""``model.dtype`` names to torch dtypes: the one resolver training, evaluation and vLLM share."""

from __future__ import annotations

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_dtype(name: str) -> torch.dtype:
    """``auto`` is bf16 on CUDA and fp32 elsewhere (CPU bf16 kernels are slow and inexact)."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if name not in DTYPES:
        raise ValueError(f"model.dtype: auto, bf16, fp16 or fp32, got {name!r}")
    return DTYPES[name]
