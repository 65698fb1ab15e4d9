"""Throughput of the batch reward scorer (hard time limit on).

    python bench/bench_rewards.py            # 2 workers, MATH500 ground truths + adversarial
    python bench/bench_rewards.py --wrong    # also the perturbed (wrong) answers, the slow path

Prints answers/s and the number of time-outs. Pin to two cores with
``taskset -c 0,1 python bench/bench_rewards.py`` to reproduce the 2-core target (>= 500/s).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from mm_gmpo.data.loaders import default_data_dir
from mm_gmpo.rewards import RewardScorer

ADVERSARIAL = [
    r"\boxed{9^{9^{9^{9}}}}",
    r"\boxed{10^{10^{10}}!}",
    r"\boxed{" + "{" * 2000 + "1" + "}" * 2000 + "}",
    "x" * 200_000 + r"\boxed{1}",
    r"\boxed{\frac{1}{}}\left( \sqrt[}{2} \end{pmatrix} \boxed{\frac{",
    "\x00\x00\\boxed{1\x00}\x00",
    "\\boxed{\u202e٣ⅷ🙂\ufeff𝟙}",
    r"\boxed{2^{99999999}}",
    r"\boxed{\binom{10000000}{5000000}}",
]


def data_dir() -> Path:
    return default_data_dir()


def perturb(gt: str) -> str:
    m = re.search(r"\d+", gt)
    return gt + "+1" if not m else gt[: m.start()] + str(int(m.group()) + 1) + gt[m.end() :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=4.0, help="hard limit per answer, seconds")
    ap.add_argument("--rounds", type=int, default=4, help="score calls (one per training step)")
    ap.add_argument("--wrong", action="store_true", help="add the perturbed MATH500 answers")
    args = ap.parse_args(argv)

    rows = [json.loads(line) for line in (data_dir() / "math" / "math500.jsonl").open()]
    responses = [r"\boxed{" + r["answer"] + "}" for r in rows]
    records = [{"answer": r["answer"]} for r in rows]
    if args.wrong:
        responses += [r"\boxed{" + perturb(r["answer"]) + "}" for r in rows]
        records += [{"answer": r["answer"]} for r in rows]
    responses += ADVERSARIAL
    records += [{"answer": "2"}] * len(ADVERSARIAL)

    with RewardScorer("math", timeout_s=args.timeout, num_workers=args.workers) as scorer:
        t0 = time.perf_counter()
        scorer.pool.start()
        startup = time.perf_counter() - t0
        n = timeouts = errors = 0
        correct = 0.0
        per_round = []
        t0 = time.perf_counter()
        for _ in range(args.rounds):
            res = scorer.score(responses, records)
            per_round.append(round(len(responses) / res.seconds, 1))
            n += len(responses)
            timeouts += res.num_timeouts
            errors += res.num_errors
            correct += sum(res.accuracy)
        elapsed = time.perf_counter() - t0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        json.dumps(
            {
                "answers": n,
                "seconds": round(elapsed, 3),
                "answers_per_s": round(n / elapsed, 1),
                # the first round is cold: no parse of any answer cached in the workers yet
                "answers_per_s_by_round": per_round,
                "timeouts": timeouts,
                "errors": errors,
                "accuracy": round(correct / n, 4),
                "workers": args.workers,
                "cores_available": cores,
                "hard_limit_s": args.timeout,
                "startup_s": round(startup, 3),
                "with_wrong_answers": args.wrong,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
