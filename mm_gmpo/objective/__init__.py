"""The objective core: pure tensor code shared by the text and vision-language paths.

The trainer calls :func:`compute_policy_loss` with a loss name; it never branches on the
algorithm itself.
"""

from __future__ import annotations

import torch

from mm_gmpo.objective.advantages import group_advantages, zero_variance_groups
from mm_gmpo.objective.losses import LOSSES, LossParams, LossSpec, get_loss, register_loss
from mm_gmpo.objective.masked import masked_mean, masked_sum
from mm_gmpo.objective.metrics import entropy_from_logits, k3_kl, ratio_metrics

__all__ = [
    "LOSSES",
    "LossParams",
    "LossSpec",
    "compute_policy_loss",
    "entropy_from_logits",
    "get_loss",
    "group_advantages",
    "k3_kl",
    "masked_mean",
    "masked_sum",
    "ratio_metrics",
    "register_loss",
    "zero_variance_groups",
]


def compute_policy_loss(
    name: str,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float | None = None,
    clip_high: float | None = None,
    max_len: int | None = None,
    denominator: float | None = None,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss of one micro-batch plus its metrics.

    Shapes: ``logp``, ``old_logp``, ``mask`` (and ``ref_logp``, ``entropy``) [B, T];
    ``advantages`` [B]. Clip ranges default to the loss's paper values. ``denominator`` is the
    number of the loss's units (sequences, or tokens for ``dapo``) in the whole optimizer
    batch, so that micro-batch losses add up to the full-batch loss. The optional KL-to-reference
    term (k3, coefficient 0 as in the paper) is reduced over the same unit.
    """
    if logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(
            f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and mask "
            f"{tuple(mask.shape)} must have the same [batch, seq] shape"
        )
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be [batch]={logp.shape[0]}, got {tuple(advantages.shape)}")
    spec = get_loss(name)
    params = LossParams(
        clip_low=spec.clip_low if clip_low is None else clip_low,
        clip_high=spec.clip_high if clip_high is None else clip_high,
        max_len=max_len,
    )
    logp32 = logp.float()  # [B, T] the objective is always evaluated in fp32
    old32 = old_logp.float()  # [B, T]
    adv32 = advantages.float()  # [B]
    loss, stats = spec.fn(logp32, old32, adv32, mask, params, denominator)
    metrics = ratio_metrics(logp32, old32, mask, stats["clipped_low"], stats["clipped_high"])
    metrics["pg_loss"] = loss.detach()
    if ref_logp is not None and kl_coef != 0.0:
        kl_tok = k3_kl(logp32, ref_logp.float())  # [B, T]
        if spec.unit == "token":
            count = mask.sum() if denominator is None else denominator
            kl = masked_sum(kl_tok, mask) / max(float(count), 1.0)
        else:
            count = logp.shape[0] if denominator is None else denominator
            kl = masked_mean(kl_tok, mask, dim=1).sum() / max(float(count), 1.0)
        loss = loss + kl_coef * kl
        metrics["ref_kl"] = kl.detach()
    if entropy is not None:
        metrics["entropy"] = masked_mean(entropy.detach().float(), mask)
    metrics["loss"] = loss.detach()
    return loss, metrics
