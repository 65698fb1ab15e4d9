"""Scores of one benchmark from its per-problem verdicts.

Definitions (``n_i`` samples of problem ``i``, ``c_i`` of them correct, ``P`` problems):

* ``pass@1`` = avg@n = mean_i c_i / n_i. With one greedy sample this is the paper's pass@1;
  with 16 samples at temperature 0.5 it is the paper's VL "mean accuracy".
* ``pass@k`` (k > 1) = mean_i [1 - C(n_i - c_i, k) / C(n_i, k)], the unbiased estimator of
  Chen et al. 2021 (Codex): the chance that at least one of k samples drawn without
  replacement from the n_i is correct. Computed as a running product, never with the
  binomials themselves, which overflow floats for n in the hundreds.
* ``maj@k`` is not computed: the paper does not report it.

All values are fractions in [0, 1]; tables print them as percentages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples, ``c`` of them correct."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0  # every draw of k samples contains a correct one
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def default_ks(n: int, extra: Iterable[int] = ()) -> list[int]:
    """k values reported for n samples: 1, powers of two up to n, n itself, and ``extra`` (<= n)."""
    ks = {1, n}
    k = 2
    while k < n:
        ks.add(k)
        k *= 2
    ks.update(x for x in extra if 1 <= x <= n)
    return sorted(ks)


def benchmark_metrics(rows: Sequence[Mapping[str, Any]], ks: Iterable[int] = ()) -> dict[str, Any]:
    """Metrics of one benchmark from its prediction rows (one row per problem, as written by
    :mod:`mm_gmpo.evaluation.runner`: ``row["samples"]`` each with ``correct``, ``num_tokens``,
    ``truncated`` and optionally ``timed_out`` / ``error`` / ``extracted``).

    Why computed from the rows and not on the fly: a resumed run and a fresh one then give the
    same numbers by construction, and tables can be rebuilt from files alone.
    """
    if not rows:
        raise ValueError("no prediction rows")
    counts = []
    tokens = truncated = timed_out = errors = no_answer = total = 0
    for row in rows:
        samples = row["samples"]
        if not samples:
            raise ValueError(f"problem {row.get('id')!r} has no samples")
        counts.append((len(samples), sum(1 for s in samples if float(s["correct"]) >= 1.0)))
        for s in samples:
            total += 1
            tokens += int(s.get("num_tokens", 0))
            truncated += bool(s.get("truncated", False))
            timed_out += bool(s.get("timed_out", False))
            errors += bool(s.get("error"))
            no_answer += s.get("extracted") is None
    n_min = min(n for n, _ in counts)
    n_max = max(n for n, _ in counts)
    out: dict[str, Any] = {
        "problems": len(rows),
        "samples_per_problem": n_max if n_min == n_max else [n_min, n_max],
        "correct": sum(c for _, c in counts),
        "pass@1": sum(c / n for n, c in counts) / len(counts),
    }
    out[f"avg@{n_min}" if n_min == n_max else "avg@n"] = out["pass@1"]
    for k in default_ks(n_min, ks):
        if k > 1:
            out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
    out["mean_response_tokens"] = tokens / total
    out["truncated_fraction"] = truncated / total
    out["no_answer_fraction"] = no_answer / total
    out["timeouts"] = timed_out
    out["errors"] = errors
    return out


def average(values: Iterable[float]) -> float | None:
    """Plain (macro) mean over benchmarks, as the paper's "Avg." column; None when empty."""
    vals = list(values)
    return sum(vals) / len(vals) if vals else None
