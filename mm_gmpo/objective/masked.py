"""Masked reductions over [batch, seq] tensors.

Padding positions may hold anything (even -inf log-probs), so values are selected with
``torch.where`` rather than multiplied by the mask: ``0 * inf`` would poison the sum.
"""

from __future__ import annotations

import torch


def masked_fill_zero(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Values where ``mask`` is set, exact zeros elsewhere (gradient flows only through kept entries)."""
    return torch.where(mask.bool(), values, torch.zeros_like(values))


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of the kept entries, over ``dim`` or over everything."""
    kept = masked_fill_zero(values, mask)
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of the kept entries; an all-masked row gives 0 instead of NaN."""
    count = mask.to(values.dtype).sum() if dim is None else mask.to(values.dtype).sum(dim=dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1.0)
