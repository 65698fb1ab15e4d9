"""Row 3: the GMPO objective, loss + backward on a [B, T] batch on CPU.

    python bench/bench_objective.py                 # [256, 3000] fp32, 1 warm-up, 5 repeats
    python bench/bench_objective.py --batch 8 --seq 64 --repeats 2   # smoke size

mm-gmpo's ``compute_policy_loss("gmpo", ...)`` (batched, with its metrics) against a reference
written the straightforward way: one sequence at a time, as the paper's released code processes
responses, the same formula (token clip of δ in log space on the pessimistic side, geometric
mean over the sequence's tokens, mean of -A·w over sequences). Before timing, the bench checks
that both give the same loss and the same gradient. GRPO through the same entry point is timed
for context.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_OUT, Row, median, spread, timed_runs, write_row  # noqa: E402

from mm_gmpo.objective import compute_policy_loss  # noqa: E402


def reference_gmpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    lengths: list[int],
    clip_low: float = 0.4,
    clip_high: float = 0.4,
) -> torch.Tensor:
    """GMPO written per sample: for each response, its own tokens only, then the mean."""
    terms = []
    for i, n in enumerate(lengths):
        a = advantages[i]
        delta = logp[i, :n] - old_logp[i, :n]  # [n]
        clipped = delta.clamp(-clip_low, clip_high)  # [n]
        # pessimistic side: min for a positive advantage, max for a negative one
        kept = torch.minimum(delta, clipped) if a >= 0 else torch.maximum(delta, clipped)  # [n]
        w = torch.exp(kept.mean())
        terms.append(-a * w)
    return torch.stack(terms).mean()


def make_batch(batch: int, seq: int, seed: int = 0):
    """Log-probs near a sampler's, ragged lengths (a quarter of the rows at full length)."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(batch, seq, generator=g) * 3.0  # [B, T]
    logp = old + 0.3 * torch.randn(batch, seq, generator=g)  # [B, T] some tokens past ±0.4
    lengths = torch.randint(seq // 4, seq + 1, (batch,), generator=g)
    lengths[: batch // 4] = seq
    mask = torch.arange(seq)[None, :] < lengths[:, None]  # [B, T]
    adv = torch.randn(batch, generator=g)  # [B]
    return logp, old, adv, mask, lengths.tolist()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seq", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)

    logp0, old, adv, mask, lengths = make_batch(args.batch, args.seq)

    # correctness first: same loss and gradient
    a = logp0.clone().requires_grad_(True)
    loss_a, _ = compute_policy_loss("gmpo", a, old, adv, mask)
    loss_a.backward()
    b = logp0.clone().requires_grad_(True)
    loss_b = reference_gmpo_loss(b, old, adv, lengths)
    loss_b.backward()
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-9)

    def batched(name: str):
        def run() -> None:
            x = logp0.clone().requires_grad_(True)
            loss, _ = compute_policy_loss(name, x, old, adv, mask)
            loss.backward()

        return run

    def per_sample() -> None:
        x = logp0.clone().requires_grad_(True)
        reference_gmpo_loss(x, old, adv, lengths).backward()

    kw = {"warmup": args.warmup, "repeats": args.repeats}
    t_gmpo = timed_runs(batched("gmpo"), **kw)
    t_ref = timed_runs(per_sample, **kw)
    t_grpo = timed_runs(batched("grpo"), **kw)
    m_gmpo, m_ref, m_grpo = median(t_gmpo), median(t_ref), median(t_grpo)
    row = Row(
        row=3,
        name="Objective: GMPO loss + backward",
        figure=f"ms per loss+backward, [B, T] = [{args.batch}, {args.seq}] fp32 CPU",
        value=1e3 * m_gmpo,
        baseline_name="per-sample reference loop (one sequence at a time)",
        baseline_value=1e3 * m_ref,
        ratio=m_gmpo / m_ref,
        ratio_note="mm-gmpo time / reference time (lower is better)",
        target="< 1 (faster than the per-sample loop)",
        met=m_gmpo < m_ref,
        conditions=(
            f"torch threads {torch.get_num_threads()}; loss and grad checked equal to the reference "
            f"before timing; {args.warmup} warm-up, median of {args.repeats}; mm-gmpo's time includes "
            f"its metrics (clip fractions, log-ratio range)"
        ),
        details={
            "gmpo_s": t_gmpo,
            "reference_s": t_ref,
            "grpo_s": t_grpo,
            "gmpo_spread_s": spread(t_gmpo),
            "reference_spread_s": spread(t_ref),
            "grpo_ms_median": 1e3 * m_grpo,
            "gmpo_over_grpo": m_gmpo / m_grpo,
            "tokens": int(mask.sum()),
        },
    )
    path = write_row(row, args.out)
    print(
        json.dumps(
            {
                "row": 3,
                "gmpo_ms": round(1e3 * m_gmpo, 2),
                "reference_ms": round(1e3 * m_ref, 2),
                "grpo_ms": round(1e3 * m_grpo, 2),
                "ratio": round(m_gmpo / m_ref, 4),
                "written": str(path),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
