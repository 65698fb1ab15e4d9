"""The CPU demo's synthetic task: two-digit addition and subtraction.

Why this task: a tiny random model can learn it in a few hundred RL steps on a CPU (short prompts,
single-digit tokens, answers of 1-3 digits), and a rule-based verifier judges it exactly, so the
demo shows reward going up without any downloaded data.

Train and test are disjoint by construction: each problem (a, op, b) belongs to one split by a
fixed rule, so a held-out score never counts memorised training problems.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence

from mm_gmpo.data.records import Record

SPLITS = ("train", "test")
SOURCE = "synthetic_arithmetic"


def _split_of(a: int, op: str, b: int) -> str:
    """One in ten problems is held out for test; the rule is arbitrary but fixed."""
    return "test" if (7 * a + 3 * b + (op == "-")) % 10 == 0 else "train"


def arithmetic_problems(
    split: str, ops: Sequence[str] = ("+", "-"), lo: int = 10, hi: int = 99
) -> list[tuple[int, str, int]]:
    """Every (a, op, b) of the split, in a fixed order. Subtraction keeps a >= b (no negatives)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {SPLITS}")
    bad_ops = set(ops) - {"+", "-"}
    if bad_ops or not ops:
        raise ValueError(f"ops must be a non-empty subset of ('+', '-'), got {tuple(ops)}")
    return [
        (a, op, b)
        for op in ops
        for a in range(lo, hi + 1)
        for b in range(lo, hi + 1)
        if (op == "+" or a >= b) and _split_of(a, op, b) == split
    ]


def make_arithmetic_records(
    n: int, seed: int = 0, split: str = "train", ops: Sequence[str] = ("+", "-"), lo: int = 10, hi: int = 99
) -> list[Record]:
    """``n`` distinct problems like "What is 37 + 45?" (answer "82"), the same for the same arguments."""
    pool = arithmetic_problems(split, ops, lo, hi)
    if not 0 <= n <= len(pool):
        raise ValueError(f"n={n} but the {split!r} split has {len(pool)} distinct problems")
    # A string seed goes through SHA-512 in `random`, so it is stable across processes and versions.
    rng = random.Random(f"{SOURCE}:{seed}:{split}")
    records = []
    for i, (a, op, b) in enumerate(rng.sample(pool, n)):
        result = a + b if op == "+" else a - b
        records.append(
            Record(
                id=f"arith-{split}-{seed}-{i}",
                problem=f"What is {a} {op} {b}?",
                answer=str(result),
                source=SOURCE,
                split=split,
                metadata={"a": a, "b": b, "op": op},
            )
        )
    return records


def comparison_problems(split: str, lo: int = 10, hi: int = 99) -> list[tuple[int, int]]:
    """Every ordered pair (a, b), a != b, of the split; the same split rule as the arithmetic task."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {SPLITS}")
    return [
        (a, b)
        for a in range(lo, hi + 1)
        for b in range(lo, hi + 1)
        if a != b and _split_of(a, "max", b) == split
    ]


def make_comparison_records(
    n: int, seed: int = 0, split: str = "train", lo: int = 10, hi: int = 99
) -> list[Record]:
    """``n`` problems like "Which is larger, 37 or 45?" (answer "45").

    The CPU demo's default task: a tiny model warm-started for a few seconds is right on part
    of the held-out set and usually names one of the two numbers, so sampled groups carry reward
    spread from the first RL step; two-digit arithmetic needs far more warm-start than a demo
    has time for on two cores.
    """
    pool = comparison_problems(split, lo, hi)
    if not 0 <= n <= len(pool):
        raise ValueError(f"n={n} but the {split!r} split has {len(pool)} distinct problems")
    rng = random.Random(f"{SOURCE}:compare:{seed}:{split}")
    return [
        Record(
            id=f"compare-{split}-{seed}-{i}",
            problem=f"Which is larger, {a} or {b}?",
            answer=str(max(a, b)),
            source="synthetic_comparison",
            split=split,
            metadata={"a": a, "b": b},
        )
        for i, (a, b) in enumerate(rng.sample(pool, n))
    ]


def _digit_tuples(split: str, digits: range, count: int) -> list[tuple[int, ...]]:
    """Every ordered tuple of ``count`` distinct ``digits`` in the split (about one in ten held out)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {SPLITS}")
    return [
        t
        for t in itertools.permutations(digits, count)
        if ("test" if (sum((i + 3) * d for i, d in enumerate(t)) % 10) == 0 else "train") == split
    ]


def _digit_records(
    task: str,
    pool: list[tuple[int, ...]],
    n: int,
    seed: int,
    split: str,
    problem: Callable[[str], str],
    answer: Callable[[tuple[int, ...]], str],
) -> list[Record]:
    """``n`` records drawn from ``pool`` (seeded per task, seed and split); text from the callables."""
    if not 0 <= n <= len(pool):
        raise ValueError(f"n={n} but the {split!r} split has {len(pool)} distinct problems")
    rng = random.Random(f"{SOURCE}:{task}:{seed}:{split}")
    return [
        Record(
            id=f"{task}-{split}-{seed}-{i}",
            problem=problem(", ".join(map(str, digits))),
            answer=answer(digits),
            source=f"synthetic_{task}",
            split=split,
            metadata={"digits": list(digits)},
        )
        for i, digits in enumerate(rng.sample(pool, n))
    ]


def largest_problems(split: str, count: int = 4) -> list[tuple[int, ...]]:
    """Every ordered tuple of ``count`` distinct digits in the split (one in ten held out)."""
    return _digit_tuples(split, range(10), count)


def make_largest_records(n: int, seed: int = 0, split: str = "train", count: int = 4) -> list[Record]:
    """``n`` problems like "Which is the largest of 3, 8, 5, 1?" (answer "8").

    The CPU demo's default task. Its answer is one token, and a short warm-start leaves a tiny
    model at a useful prior (it learns the format and that 9 is often right) but not at the
    rule, so RL has room to lift held-out accuracy within a couple of minutes on two cores;
    two-digit arithmetic needs far more warm-start than a demo has time for.
    """
    return _digit_records(
        "largest",
        largest_problems(split, count),
        n,
        seed,
        split,
        lambda listed: f"Which is the largest of {listed}?",
        lambda digits: str(max(digits)),
    )


def sorted_problems(split: str, count: int = 4) -> list[tuple[int, ...]]:
    """Every ordered tuple of ``count`` distinct digits 1-9 in the split (about one in ten held out).

    0 is left out so that the sorted answer never starts with a 0 a number parser would drop.
    """
    return _digit_tuples(split, range(1, 10), count)


def make_sorted_records(n: int, seed: int = 0, split: str = "train", count: int = 4) -> list[Record]:
    """``n`` problems like "Sort 3, 8, 5, 1 from smallest to largest." (answer "1358").

    The stability study's multi-token task: the answer is ``count`` digit tokens, each a choice
    the policy can get wrong, so a sequence's tokens carry different importance ratios and the
    geometric mean (GMPO) and the per-token ratios (GRPO) weight them differently. In the
    "largest" task only one response token is ever uncertain and the two objectives differ only
    in their clip ranges.
    """
    return _digit_records(
        "sorted",
        sorted_problems(split, count),
        n,
        seed,
        split,
        lambda listed: f"Sort {listed} from smallest to largest.",
        lambda digits: "".join(map(str, sorted(digits))),
    )
