"""Where a step's extreme log-ratios come from: a per-token look inside stressed training.

The study's table gives each step's smallest and largest δ = log π_θ − log π_old. This probe
trains the same stressed config for a few steps in this process and, in every micro-batch of
every pass, keeps per-token δ, π_old, the sequence's advantage, whether the loss clipped the
token, and the token's gradient weight |o|·|∂L/∂log π_θ(t)| at |A| = 1 (GRPO: the token's own
ratio r_t where unclipped; GMPO: the sequence's clipped geometric-mean ratio). It answers three questions the range alone cannot:

- how many tokens of a response are choices at all (π_old < 0.9): with one such token the
  geometric mean over |o| tokens is that token's ratio to the power 1/|o| and GMPO differs from
  GRPO only in its clip range;
- which tokens carry the extreme δ: ones the loss pushes (A ≠ 0, not clipped), ones it has
  stopped pushing (clipped), or ones in zero-advantage groups, moved only through shared weights;
- how unequal the per-token gradient weights get (the paper's argument for the geometric mean).
"""

from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mm_gmpo.objective import get_loss
from mm_gmpo.objective.losses import LossParams

CHOICE_PROB = 0.9  # a token with π_old below this was a real choice of the sampler
EXTREME = 2.0  # |δ| above this (a ratio beyond e^2 ≈ 7.4 or below 0.14) counts as extreme


@dataclass
class TokenLog:
    """Per-token records of one probe run, flattened over micro-batches, passes and steps."""

    delta: list[torch.Tensor] = field(default_factory=list)  # [n] δ per masked token
    p_old: list[torch.Tensor] = field(default_factory=list)  # [n] π_old per masked token
    kind: list[torch.Tensor] = field(default_factory=list)  # [n] 0: A=0, 1: pushed, 2: clipped
    weight: list[torch.Tensor] = field(default_factory=list)  # [n] |o|·|∂L/∂logp| at |A| = 1
    choices: list[int] = field(default_factory=list)  # per sequence: tokens with π_old < 0.9
    lengths: list[int] = field(default_factory=list)  # per sequence: response tokens

    def cat(self, name: str) -> torch.Tensor:
        parts = getattr(self, name)
        return torch.cat(parts) if parts else torch.zeros(0)


@contextmanager
def recording(log: TokenLog) -> Iterator[None]:
    """Wrap the trainer's loss call so that every micro-batch is recorded into ``log``."""
    import mm_gmpo.train.loop as loop

    original = loop.compute_policy_loss

    def wrapped(name: str, logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask, **kw):
        out = original(name, logp, old_logp, advantages, mask, **kw)
        _record(log, name, logp, old_logp, advantages, mask, kw)
        return out

    loop.compute_policy_loss = wrapped
    try:
        yield
    finally:
        loop.compute_policy_loss = original


def _record(
    log: TokenLog,
    name: str,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    kw: dict[str, Any],
) -> None:
    spec = get_loss(name)
    params = LossParams(
        clip_low=spec.clip_low if kw.get("clip_low") is None else kw["clip_low"],
        clip_high=spec.clip_high if kw.get("clip_high") is None else kw["clip_high"],
        max_len=kw.get("max_len"),
    )
    keep = mask.bool()  # [B, T]
    leaf = logp.detach().float().requires_grad_(True)  # [B, T]
    sign = torch.sign(advantages.detach().float())  # [B] unit |A| keeps the weight comparable
    loss, stats = spec.fn(leaf, old_logp.detach().float(), sign, mask, params, 1.0)
    (grad,) = torch.autograd.grad(loss, leaf)  # [B, T]
    delta = leaf.detach() - old_logp.float()  # [B, T]
    clipped = (stats["clipped_low"] | stats["clipped_high"]).bool()  # [B, T]
    zero_adv = (advantages == 0).unsqueeze(1).expand_as(keep)  # [B, T]
    kind = torch.where(zero_adv, 0, torch.where(clipped, 2, 1))  # [B, T]
    lengths = keep.sum(dim=1, keepdim=True).clamp(min=1)  # [B, 1]
    log.delta.append(delta[keep].cpu())
    log.p_old.append(old_logp.float().exp()[keep].cpu())
    log.kind.append(kind[keep].cpu())
    # ×|o| undoes the 1/|o| both losses share: GRPO's weight is then r_t, GMPO's w_i.
    log.weight.append((grad.abs() * lengths)[keep].cpu())
    # Every row comes once per pass, so means over these lists are means over sequences.
    choices = ((old_logp.float().exp() < CHOICE_PROB) & keep).sum(dim=1)  # [B]
    log.choices.extend(int(c) for c in choices)
    log.lengths.extend(int(n) for n in lengths.squeeze(1))


def summarize_tokens(log: TokenLog) -> dict[str, float]:
    """The probe's numbers for one run (see the module docstring)."""
    delta, p_old, kind, weight = (log.cat(k) for k in ("delta", "p_old", "kind", "weight"))
    live = kind > 0
    extreme = delta.abs() > EXTREME
    n_ext = int(extreme.sum())
    pushed_w = weight[kind == 1]

    def share(mask: torch.Tensor) -> float:
        return float((mask & extreme).sum()) / n_ext if n_ext else math.nan

    def median(x: torch.Tensor) -> float:
        return float(x.median()) if x.numel() else math.nan

    return {
        "tokens": float(delta.numel()),
        "response_tokens_mean": statistics.fmean(log.lengths) if log.lengths else math.nan,
        "choice_tokens_mean": statistics.fmean(log.choices) if log.choices else math.nan,
        "extreme_frac": n_ext / max(1, delta.numel()),
        "extreme_zero_adv": share(kind == 0),
        "extreme_pushed": share(kind == 1),
        "extreme_clipped": share(kind == 2),
        "extreme_p_old_median": median(p_old[extreme]),
        "p_old_median": median(p_old),
        "delta_min": float(delta.min()) if delta.numel() else math.nan,
        "delta_min_live": float(delta[live].min()) if live.any() else math.nan,
        # Importance weight each pushed token's gradient carries (1 on-policy).
        "weight_p01": float(torch.quantile(pushed_w, 0.01)) if pushed_w.numel() else math.nan,
        "weight_p99": float(torch.quantile(pushed_w, 0.99)) if pushed_w.numel() else math.nan,
        "weight_max": float(pushed_w.max()) if pushed_w.numel() else math.nan,
    }


def probe(config: str | Path, loss: str, overrides: list[str], steps: int) -> dict[str, float]:
    """Train ``config`` with ``loss`` for ``steps`` in this process, recording every token."""
    from mm_gmpo.analysis.study import HOUSEKEEPING, STRESS, parse_arm
    from mm_gmpo.train.config import load_config
    from mm_gmpo.train.run import train

    arm = parse_arm(loss)
    log = TokenLog()
    with tempfile.TemporaryDirectory(prefix="mm_gmpo_probe_") as tmp:
        cfg = load_config(
            config,
            [
                *STRESS,
                *HOUSEKEEPING,
                *arm.overrides,
                f"train.steps={steps}",
                f"train.output_dir={tmp}",
                "train.eval_every=0",
                "data.synthetic_eval_size=8",
                *overrides,
            ],
        )
        with recording(log):
            train(cfg)
    return summarize_tokens(log)


COLUMNS = [
    ("response_tokens_mean", "response tokens", ".1f"),
    ("choice_tokens_mean", f"choice tokens (π_old < {CHOICE_PROB})", ".2f"),
    ("extreme_frac", f"tokens with abs(δ) > {EXTREME:g}", ".4f"),
    ("extreme_zero_adv", "of those: A = 0 group", ".2f"),
    ("extreme_pushed", "pushed (A ≠ 0, unclipped)", ".2f"),
    ("extreme_clipped", "clipped", ".2f"),
    ("extreme_p_old_median", "their median π_old", ".3f"),
    ("delta_min", "most negative δ", ".2f"),
    ("delta_min_live", "most negative δ, A ≠ 0", ".2f"),
    ("weight_p01", "pushed tokens' weight, 1st pct", ".3f"),
    ("weight_p99", "99th pct", ".3f"),
    ("weight_max", "max", ".2f"),
]


def run_probe(
    tasks: list[str] | None,
    losses: list[str] | None,
    steps: int,
    out: str | Path,
    extra: list[str],
    command: str,
) -> Path:
    """Probe every (task, loss) in turn and write the markdown table to ``out``."""
    from mm_gmpo.analysis.study import STRESS, discover_tasks

    found, skipped = discover_tasks(tasks)
    losses = losses or ["gmpo", "grpo"]
    rows = []
    for task in found:
        for loss in losses:
            print(f"[probe] {task.name} {loss}: {steps} steps", flush=True)
            rows.append((task.name, loss, probe(task.config, loss, extra, steps)))
    lines = [
        "# Where the extreme log-ratios come from (per-token probe)",
        "",
        f"Written by `{command}` (do not edit by hand; rerun the command).",
        "",
        f"Each row trains its task's config for {steps} RL steps under the study's stress "
        f"(`{' '.join(STRESS)}`{', ' + ' '.join(extra) if extra else ''}), seed 0, and records every "
        "response token of every micro-batch of every pass: δ = log π_θ − log π_old, π_old, whether "
        "its sequence had a zero advantage, whether the loss clipped it, and the importance weight "
        "its gradient carries (|o|·|∂L/∂log π_θ| at |A| = 1: GRPO's own ratio r_t, GMPO's clipped "
        "geometric-mean ratio of the sequence; 1 when on-policy)."
        + (f" Not run: {', '.join(f'{k} ({v})' for k, v in skipped.items())}." if skipped else ""),
        "",
        "| task | loss | " + " | ".join(c[1] for c in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for task, loss, stats in rows:
        cells = [format(stats[k], spec) if math.isfinite(stats[k]) else "–" for k, _, spec in COLUMNS]
        lines.append(f"| {task} | {loss} | " + " | ".join(cells) + " |")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"[probe] table: {out}")
    return out
