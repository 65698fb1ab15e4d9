"""Diagnostics every loss reports: how far the policy moved and where the clip bit.

The log-ratio range (min / max of δ over response tokens) is the quantity the GMPO paper
plots to show its stability against GRPO; clip fractions say how much of the batch carried
no gradient.
"""

from __future__ import annotations

import torch

from mm_gmpo.objective.masked import masked_fill_zero, masked_mean

# How per-micro-batch values of a metric combine into the step's value; any metric not named
# here is averaged over micro-batches. The log-ratio range is the extreme over the whole step.
METRIC_REDUCTIONS: dict[str, str] = {"log_ratio_min": "min", "log_ratio_max": "max"}
_REDUCE = {"mean": lambda v: sum(v) / len(v), "min": min, "max": max}


def reduce_metrics(per_micro: list[dict[str, float]]) -> dict[str, float]:
    """One value per metric over a step's micro-batches, each by its declared reduction."""
    names = {k for m in per_micro for k in m}
    out = {}
    for name in sorted(names):
        values = [float(m[name]) for m in per_micro if name in m]
        out[name] = _REDUCE[METRIC_REDUCTIONS.get(name, "mean")](values)
    return out


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(π || π_ref): exp(r) - 1 - r with r = ref_logp - logp.

    Non-negative and unbiased for samples drawn from π (Schulman, "Approximating KL
    divergence", 2020).
    """
    log_r = ref_logp - logp  # [B, T]
    return torch.exp(log_r.clamp(max=60.0)) - 1.0 - log_r  # [B, T]


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of the softmax over the last dim; [..., V] -> [...]."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # [..., V]
    return -(logp.exp() * logp).sum(dim=-1)  # [...]


@torch.no_grad()
def ratio_metrics(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    mask: torch.Tensor,
    clipped_low: torch.Tensor,
    clipped_high: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Scalar diagnostics over the masked tokens of one micro-batch (detached)."""
    keep = mask.bool()  # [B, T]
    n_tokens = keep.sum().clamp(min=1).float()
    delta = masked_fill_zero(logp.detach().float() - old_logp.float(), keep)  # [B, T]
    has_tokens = bool(keep.any())
    inf = torch.tensor(float("inf"), device=delta.device)
    return {
        "clip_frac_low": clipped_low.float().sum() / n_tokens,
        "clip_frac_high": clipped_high.float().sum() / n_tokens,
        "log_ratio_min": torch.where(keep, delta, inf).min() if has_tokens else delta.new_zeros(()),
        "log_ratio_max": torch.where(keep, delta, -inf).max() if has_tokens else delta.new_zeros(()),
        "log_ratio_mean": masked_mean(delta, keep),
        "ratio_mean": masked_mean(torch.exp(delta.clamp(max=60.0)), keep),
        # KL(π_old || π) by k3 on samples from π_old: how far this update moved the policy.
        "approx_kl": masked_mean(k3_kl(old_logp.float(), logp.detach().float()), keep),
    }
