"""Truncated importance weights for the sampler/trainer mismatch (off by default).

The rollout engine samples from its own copy of the policy (vLLM kernels, another precision),
so the responses come from π_sampler, not from the π_old the objective assumes. Truncated
importance sampling (TIS) reweights each token by ρ_t = π_old / π_sampler, capped so a token
the sampler found unlikely cannot dominate the batch::

    w_t = min(exp(old_logp_t − sampler_logp_t), cap)

GMPO's objective is a geometric mean over the sequence, so its correction is one weight per
sequence, the geometric mean of the token weights over the response mask::

    W_i = exp( Σ_t m_t · min(old_t − sampler_t, log cap) / Σ_t m_t )

The weights are constants (no gradient): they rescale each sequence's advantage, which keeps
its sign and hence every clip decision of the loss. Folding ``W_i`` into the advantage makes
GMPO's loss exactly ``mean_i(−Â_i · W_i · w_i)``; for the per-token losses (GRPO, DAPO,
Dr.GRPO) the same per-sequence weight is the sequence-level variant of TIS.

Pure tensor functions: no model, no config.
"""

from __future__ import annotations

import math

import torch

from mm_gmpo.objective.masked import masked_fill_zero, masked_mean


def _check(old_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor, cap: float) -> None:
    if old_logp.shape != sampler_logp.shape or old_logp.shape != mask.shape:
        raise ValueError(
            f"old_logp {tuple(old_logp.shape)}, sampler_logp {tuple(sampler_logp.shape)} and mask "
            f"{tuple(mask.shape)} must have the same [batch, seq] shape"
        )
    if not cap > 0:
        raise ValueError(f"the TIS cap must be positive, got {cap}")


def tis_log_token_weights(
    old_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor, cap: float
) -> torch.Tensor:
    """log w_t = min(old − sampler, log cap) on response tokens, 0 elsewhere. [B, T]"""
    _check(old_logp, sampler_logp, mask, cap)
    log_ratio = (old_logp.float() - sampler_logp.float()).detach()  # [B, T]
    return masked_fill_zero(log_ratio.clamp(max=math.log(cap)), mask)  # [B, T]


def tis_sequence_weights(
    old_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor, cap: float
) -> torch.Tensor:
    """GMPO's per-sequence weight: the geometric mean of the truncated token weights. [B]

    Computed in log space (mean of the capped log-ratios) so long responses cannot underflow
    a product of small ratios. An empty response gets weight 1.
    """
    log_w = tis_log_token_weights(old_logp, sampler_logp, mask, cap)  # [B, T]
    return torch.exp(masked_mean(log_w, mask, dim=1))  # [B]
