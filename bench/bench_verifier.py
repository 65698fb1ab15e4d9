"""Row 4: verifier throughput, answers/s on 2 cores with the hard time limits on.

    python bench/bench_verifier.py              # 3 runs of bench_rewards.py --wrong, 3 baseline runs
    python bench/bench_verifier.py --runs 1     # smoke

The figure is ``bench/bench_rewards.py``'s own measurement (the batch ``RewardScorer``, 2 worker
processes, hard limit per answer, MATH500 ground truths + their perturbed wrong twins +
adversarial inputs), pinned to two cores with ``taskset -c 0,1``, each run a fresh process.
Its first round is cold (nothing parsed yet, as in training where every answer is new): the
headline is the median of the cold rounds; the warm rounds are reported beside it.

The baseline, measured in the same run: the same verifier function (``math_accuracy``) called
in one process, one answer after another, with no pool and no time limit, on the same answers
without the adversarial ones (which an unguarded loop may never return from), cold, in a fresh
process per run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_OUT, Row, last_json_line, median, run_measured, write_row  # noqa: E402

HERE = Path(__file__).resolve().parent


def _answers():
    """The non-adversarial responses bench_rewards.py scores with --wrong, and their answers."""
    from bench_rewards import data_dir, perturb

    rows = [json.loads(line) for line in (data_dir() / "math" / "math500.jsonl").open()]
    responses = [r"\boxed{" + r["answer"] + "}" for r in rows]
    responses += [r"\boxed{" + perturb(r["answer"]) + "}" for r in rows]
    answers = [r["answer"] for r in rows] * 2
    return responses, answers


def baseline_once() -> dict:
    from mm_gmpo.rewards import math_accuracy

    responses, answers = _answers()
    t0 = time.perf_counter()
    correct = sum(math_accuracy(r, a) for r, a in zip(responses, answers))
    dt = time.perf_counter() - t0
    return {
        "answers": len(responses),
        "seconds": dt,
        "answers_per_s": len(responses) / dt,
        "correct": correct,
    }


def _pinned(cmd: list[str]) -> list[str]:
    return (["taskset", "-c", "0,1"] if shutil.which("taskset") else []) + cmd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per side")
    ap.add_argument("--rounds", type=int, default=3, help="score calls per bench_rewards run (1st is cold)")
    ap.add_argument("--timeout", type=float, default=4.0, help="hard limit per answer, seconds")
    ap.add_argument("--baseline-once", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    if args.baseline_once:
        print(json.dumps(baseline_once()))
        return 0

    pooled, base = [], []
    for _ in range(args.runs):  # alternate the two so load drifts hit both
        res = run_measured(
            _pinned(
                [
                    sys.executable,
                    str(HERE / "bench_rewards.py"),
                    "--wrong",
                    "--workers",
                    "2",
                    "--rounds",
                    str(args.rounds),
                    "--timeout",
                    str(args.timeout),
                ]
            )
        )
        if res.returncode != 0:
            raise RuntimeError(f"bench_rewards.py failed:\n{res.stderr[-3000:]}")
        pooled.append(last_json_line(res.stdout))
        res = run_measured(_pinned([sys.executable, str(Path(__file__).resolve()), "--baseline-once"]))
        if res.returncode != 0:
            raise RuntimeError(f"baseline failed:\n{res.stderr[-3000:]}")
        base.append(last_json_line(res.stdout))
    cold = [p["answers_per_s_by_round"][0] for p in pooled]
    warm = [x for p in pooled for x in p["answers_per_s_by_round"][1:]]
    base_rates = [b["answers_per_s"] for b in base]
    v, b = median(cold), median(base_rates)
    row = Row(
        row=4,
        name="Verifier throughput (math, hard limits on)",
        figure="answers/s, cold round, 2 workers pinned to 2 cores",
        value=v,
        baseline_name="same verifier in one process, no pool, no limit (adversarial inputs left out)",
        baseline_value=b,
        ratio=v / b,
        ratio_note="pooled / in-process (higher is better)",
        target=">= 500 answers/s on 2 cores",
        met=v >= 500,
        conditions=(
            f"bench_rewards.py --wrong: {pooled[0]['answers']} answers per round "
            f"(MATH500 right + perturbed wrong + adversarial), hard limit {args.timeout} s, "
            f"median of {args.runs} fresh process(es); cores available {pooled[0]['cores_available']}"
        ),
        details={
            "cold_answers_per_s": cold,
            "warm_answers_per_s": warm,
            "warm_median": median(warm) if warm else None,
            "timeouts": [p["timeouts"] for p in pooled],
            "errors": [p["errors"] for p in pooled],
            "pool_startup_s": [p["startup_s"] for p in pooled],
            "baseline_answers_per_s": base_rates,
            "baseline_answers": base[0]["answers"],
        },
    )
    path = write_row(row, args.out)
    print(json.dumps({"row": 4, "cold_answers_per_s": v, "baseline": b, "written": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
