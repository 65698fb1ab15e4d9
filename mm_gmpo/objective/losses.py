"""Policy losses, one pure function each, registered by name.

Every loss has the same signature::

    fn(logp, old_logp, advantages, mask, params, denominator) -> (loss, stats)

``logp`` [B, T] current policy log-probs (with grad), ``old_logp`` [B, T] the policy that
sampled the responses, ``advantages`` [B] one per sequence, ``mask`` [B, T] response tokens.
``stats`` holds per-token tensors the metrics need (which tokens were clipped on which side).

Gradient accumulation: a loss is a sum over its *unit* (sequences, or tokens for DAPO's batch
token-mean) divided by ``denominator``, the number of units in the whole optimizer batch. With
the default (``None``: the units in this micro-batch) a single micro-batch gives the plain mean;
the trainer passes the global count so that summing micro-batch losses gives the exact
full-batch loss however the batch was cut.

GMPO (arXiv 2507.20673, Eq. 4 / Algorithm 1). With δ = logp - old_logp and s = sign(A)
(s = +1 at A = 0, where the term is zero anyway)::

    δ̃_t = s · min(s·δ_t, s·clip(δ_t, -ε_low, ε_high))
    w_i  = exp( Σ_t m_t δ̃_t / Σ_t m_t )
    loss = Σ_i (-A_i · w_i) / denominator

Note on the clip (docs/DESIGN.md, "The clip"): the authors' released code clamps the
sign-multiplied log-ratio ``s·δ`` with one symmetric range. Written with two bounds, that form
``clip(s·δ, -ε_low, ε_high)`` would leave ε_low inert (the min already keeps every s·δ below the
lower bound), so an asymmetric range would silently act as (ε_high, ε_high). We clip δ itself,
as PPO clips the ratio and as verl and TRL do: ε_high bounds how far a positive-advantage
token's ratio may rise, ε_low how far a negative-advantage token's ratio may fall. For the
paper's symmetric default (0.4, 0.4) the two forms are identical (tests check both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mm_gmpo.objective.masked import masked_fill_zero, masked_sum

# exp() of a log-weight beyond this is clamped: fp32/bf16 overflow at ~88.7. Only pathological
# inputs reach it (a ratio of e^60); the clamp keeps the loss finite instead of inf/NaN.
LOG_WEIGHT_LIMIT = 60.0


@dataclass(frozen=True)
class LossParams:
    """Plain numbers a loss needs. Clip ranges are in log space for GMPO, ratio space otherwise."""

    clip_low: float
    clip_high: float
    max_len: int | None = None  # Dr.GRPO's constant normaliser (the generation budget)


# Per-token boolean stats a loss reports: where its clip took effect on each side.
LossStats = dict[str, torch.Tensor]
LossFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, LossParams, float | None],
    tuple[torch.Tensor, LossStats],
]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss with its paper defaults and the unit its denominator counts."""

    fn: LossFn
    clip_low: float
    clip_high: float
    unit: str  # "sequence" or "token"
    log_space_clip: bool
    # Divide group advantages by the group's std by default (Dr.GRPO: no, mean-only).
    adv_std: bool = True
    # Fewest responses per prompt the loss can learn from. Every registered loss takes its
    # advantage relative to the prompt's group, so one response per prompt has advantage 0
    # and trains nothing; the config refuses ``rollout.n`` below this.
    min_group_size: int = 2


LOSSES: dict[str, LossSpec] = {}


def register_loss(
    name: str,
    *,
    clip_low: float,
    clip_high: float,
    unit: str = "sequence",
    log_space_clip: bool = False,
    adv_std: bool = True,
    min_group_size: int = 2,
) -> Callable[[LossFn], LossFn]:
    """Add a loss to the registry under ``name`` so configs can select it by string."""
    if unit not in ("sequence", "token"):
        raise ValueError(f"unit must be 'sequence' or 'token', got {unit!r}")

    def wrap(fn: LossFn) -> LossFn:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        LOSSES[name] = LossSpec(fn, clip_low, clip_high, unit, log_space_clip, adv_std, min_group_size)
        return fn

    return wrap


def get_loss(name: str) -> LossSpec:
    """The registered loss ``name``; the error lists the valid names."""
    try:
        return LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; registered losses: {', '.join(sorted(LOSSES))}") from None


def _safe_exp(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(x.clamp(max=LOG_WEIGHT_LIMIT))


def _sign(advantages: torch.Tensor) -> torch.Tensor:
    """sign(A) with +1 at A = 0 (the term is zero there, any sign gives the same loss)."""
    return torch.where(advantages >= 0, 1.0, -1.0).to(advantages.dtype)  # [B]


def _reduce(per_unit: torch.Tensor, denominator: float | None) -> torch.Tensor:
    """Sum over units divided by the global unit count (or this micro-batch's)."""
    count = per_unit.numel() if denominator is None else denominator
    return per_unit.sum() / max(float(count), 1.0)


def _seq_lengths(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return mask.to(dtype).sum(dim=1).clamp(min=1.0)  # [B]


def _token_clip_log_space(
    delta: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, params: LossParams
) -> tuple[torch.Tensor, LossStats]:
    """GMPO's token-level clip of δ in log space (the pessimistic side of PPO's min)."""
    s = _sign(advantages).unsqueeze(1)  # [B, 1]
    clipped = delta.clamp(-params.clip_low, params.clip_high)  # [B, T]
    delta_tilde = s * torch.minimum(s * delta, s * clipped)  # [B, T]
    # The clip took effect where the pessimistic branch is the clipped (constant) one.
    # A = 0 rows carry no gradient either way and are not counted as clipped.
    active = (s * clipped < s * delta) & mask.bool() & (advantages != 0).unsqueeze(1)  # [B, T]
    stats = {"clipped_high": active & (s > 0), "clipped_low": active & (s < 0)}
    return delta_tilde, stats


def _gmpo_core(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    params: LossParams,
    denominator: float | None,
    *,
    token_clip: bool,
    length_norm: bool,
) -> tuple[torch.Tensor, LossStats]:
    delta = masked_fill_zero(logp - old_logp, mask)  # [B, T]
    if token_clip:
        delta, stats = _token_clip_log_space(delta, advantages, mask, params)  # [B, T]
    else:
        none = torch.zeros_like(mask, dtype=torch.bool)
        stats = {"clipped_high": none, "clipped_low": none}
    log_w = masked_sum(delta, mask, dim=1)  # [B]
    if length_norm:
        log_w = log_w / _seq_lengths(mask, log_w.dtype)  # [B]
    w = _safe_exp(log_w)  # [B]
    return _reduce(-advantages * w, denominator), stats


@register_loss("gmpo", clip_low=0.4, clip_high=0.4, log_space_clip=True)
def gmpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    params: LossParams,
    denominator: float | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """Geometric mean of token-clipped importance-weighted rewards (the paper's method)."""
    return _gmpo_core(
        logp, old_logp, advantages, mask, params, denominator, token_clip=True, length_norm=True
    )


@register_loss("gmpo_noclip", clip_low=0.4, clip_high=0.4, log_space_clip=True)
def gmpo_noclip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    params: LossParams,
    denominator: float | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """Ablation: no clipping at all (equals unclipped GSPO's objective)."""
    return _gmpo_core(
        logp, old_logp, advantages, mask, params, denominator, token_clip=False, length_norm=True
    )


@register_loss("gmpo_nonorm", clip_low=0.4, clip_high=0.4, log_space_clip=True)
def gmpo_nonorm_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    params: LossParams,
    denominator: float | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """Ablation: token-clipped product of ratios without the 1/|o| power."""
    return _gmpo_core(
        logp, old_logp, advantages, mask, params, denominator, token_clip=True, length_norm=False
    )


@register_loss("gmpo_seqclip", clip_low=0.4, clip_high=0.4, log_space_clip=True)
def gmpo_seqclip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    params: LossParams,
    denominator: float | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """Ablation: clip the summed log-ratio of the sequence, then divide by its length.

    The paper's sequence-level clipping: the whole product of ratios is clipped at once, so
    one clipped sequence loses the gradient of all its tokens.
    """
    delta = masked_fill_zero(logp - old_logp, mask)  # [B, T]
    seq_delta = delta.sum(dim=1)  # [B]
    s = _sign(advantages)  # [B]
    clipped = seq_delta.clamp(-params.clip_low, params.clip_high)  # [B]
    seq_tilde = s * torch.minimum(s * seq_delta, s * clipped)  # [B]
    active_seq = (s * clipped < s * seq_delta) & (advantages != 0)  # [B]
    w = _safe_exp(seq_tilde / _seq_lengths(mask, seq_tilde.dtype))  # [B]
    active = active_seq.unsqueeze(1) & mask.bool()  # [B, T]
    stats = {"clipped_high": active & (s > 0).unsqueeze(1), "clipped_low": active & (s < 0).unsqueeze(1)}
    return _reduce(-advantages * w, denominator), stats


def _ppo_token_terms(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    params: LossParams,
) -> tuple[torch.Tensor, LossStats]:
    """PPO's clipped per-token surrogate, -min(r·A, clip(r, 1-ε_low, 1+ε_high)·A)."""
    delta = masked_fill_zero(logp - old_logp, mask)  # [B, T]
    ratio = _safe_exp(delta)  # [B, T]
    adv = advantages.unsqueeze(1)  # [B, 1]
    unclipped = -adv * ratio  # [B, T]
    clipped = -adv * ratio.clamp(1.0 - params.clip_low, 1.0 + params.clip_high)  # [B, T]
    per_token = torch.maximum(unclipped, clipped)  # [B, T]
    active = (clipped > unclipped) & mask.bool()  # [B, T]
    stats = {"clipped_high": active & (adv > 0), "clipped_low": active & (adv < 0)}
    return per_token, stats


@register_loss("grpo", clip_low=0.2, clip_high=0.2)
def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    params: LossParams,
    denominator: float | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """GRPO: PPO clip per token, mean over each sequence's tokens (1/|o|), mean over sequences."""
    per_token, stats = _ppo_token_terms(logp, old_logp, advantages, mask, params)  # [B, T]
    per_seq = masked_sum(per_token, mask, dim=1) / _seq_lengths(mask, per_token.dtype)  # [B]
    return _reduce(per_seq, denominator), stats


@register_loss("dr_grpo", clip_low=0.2, clip_high=0.2, adv_std=False)
def dr_grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    params: LossParams,
    denominator: float | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """Dr.GRPO: per-sequence token sum divided by a constant (the max generation length).

    Removes GRPO's length bias; pair it with mean-only advantages (no std division).
    """
    per_token, stats = _ppo_token_terms(logp, old_logp, advantages, mask, params)  # [B, T]
    max_len = params.max_len if params.max_len is not None else mask.shape[1]
    per_seq = masked_sum(per_token, mask, dim=1) / float(max_len)  # [B]
    return _reduce(per_seq, denominator), stats


@register_loss("dapo", clip_low=0.2, clip_high=0.28, unit="token")
def dapo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    params: LossParams,
    denominator: float | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """DAPO: clip-higher (0.2 / 0.28) and a token mean over the whole batch."""
    per_token, stats = _ppo_token_terms(logp, old_logp, advantages, mask, params)  # [B, T]
    count = mask.sum() if denominator is None else denominator
    return masked_sum(per_token, mask) / max(float(count), 1.0), stats


@register_loss("gspo", clip_low=3e-4, clip_high=4e-4)
def gspo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    params: LossParams,
    denominator: float | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """GSPO: sequence ratio exp(mean δ), PPO-clipped after averaging (ratio-space range)."""
    delta = masked_fill_zero(logp - old_logp, mask)  # [B, T]
    seq_ratio = _safe_exp(delta.sum(dim=1) / _seq_lengths(mask, delta.dtype))  # [B]
    unclipped = -advantages * seq_ratio  # [B]
    clipped = -advantages * seq_ratio.clamp(1.0 - params.clip_low, 1.0 + params.clip_high)  # [B]
    per_seq = torch.maximum(unclipped, clipped)  # [B]
    active = ((clipped > unclipped).unsqueeze(1)) & mask.bool()  # [B, T]
    adv = advantages.unsqueeze(1)  # [B, 1]
    stats = {"clipped_high": active & (adv > 0), "clipped_low": active & (adv < 0)}
    return _reduce(per_seq, denominator), stats
