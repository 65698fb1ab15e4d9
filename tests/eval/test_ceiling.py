"""Verifier ceiling through the evaluation code path: each benchmark's own ground truth as the
response must score 100% (generation -> jsonl -> scorer -> metrics, as for a model).

A sample that hit the scorer's time limit (a loaded machine) is scored again under a patient
limit: the ceiling is a property of the verifier, not of the load. Time-outs are printed,
never asserted on; the metrics are checked against the rows they summarise."""

from __future__ import annotations

import json
import math

import pytest

from mm_gmpo.evaluation.benchmarks import (
    MATH_BENCHMARKS,
    MATH_PROTOCOL,
    VL_PROTOCOL,
    get_benchmark,
    load_benchmark,
)
from mm_gmpo.evaluation.generators import GroundTruthGenerator
from mm_gmpo.evaluation.runner import predictions_path, read_predictions, run_benchmark
from mm_gmpo.rewards import RewardScorer

# (benchmark, record id) -> why the ground truth does not verify against itself. Empty: none.
AMBIGUOUS: dict[tuple[str, str], str] = {}
# Far above any ground truth's cost (well under a second each): only a hang would reach it.
PATIENT_LIMIT_S = 120.0


def _settled_misses(out, name, records, kind):
    """Samples that are not right, after scoring the timed-out ones again under a patient
    limit; and how many had timed out."""
    _, rows = read_predictions(predictions_path(out, name))
    by_id = {r.id: r for r in records}
    misses, slow = [], []
    for row in rows:
        for sample in row["samples"]:
            if sample["timed_out"]:
                slow.append((row["id"], sample["response"]))
            elif sample["correct"] != 1.0:
                misses.append((row["id"], row["answer"]))
    if slow:
        with RewardScorer(kind, timeout_s=PATIENT_LIMIT_S, num_workers=1) as patient:
            again = patient.score([resp for _, resp in slow], [by_id[i] for i, _ in slow])
        misses += [(i, by_id[i].answer) for (i, _), ok in zip(slow, again.accuracy) if ok != 1.0]
    return misses, len(slow)


def _pass_at(out, name, k):
    """pass@k recomputed from the rows: 1 - C(n - c, k) / C(n, k) per problem, averaged."""
    _, rows = read_predictions(predictions_path(out, name))
    total = 0.0
    for row in rows:
        n = len(row["samples"])
        c = sum(s["correct"] == 1.0 for s in row["samples"])
        total += 1.0 - math.comb(n - c, k) / math.comb(n, k)
    return total / len(rows)


def test_math_suite_ceiling_is_100_percent(tmp_path, data_root, math_scorer):
    gen = GroundTruthGenerator("text")
    for bench in MATH_BENCHMARKS:
        source, records = load_benchmark(bench, data_root)
        assert len(records) == bench.size
        result = run_benchmark(
            gen,
            bench,
            records,
            MATH_PROTOCOL,
            tmp_path,
            math_scorer,
            source=source,
            model_name="ground-truth",
            backend="ground-truth",
            batch_size=256,
            progress=False,
        )
        misses, slow = _settled_misses(tmp_path, bench.name, records, "math")
        misses = [m for m in misses if (bench.name, m[0]) not in AMBIGUOUS]
        print(
            f"{bench.name}: ceiling {100 * result.metrics['pass@1']:.1f}% of {result.metrics['problems']} "
            f"({slow} time-out(s) scored again)"
        )
        assert misses == []
        assert result.metrics["pass@1"] == pytest.approx(_pass_at(tmp_path, bench.name, 1))


def test_mathvision_ceiling_is_100_percent(tmp_path, data_root, geometry_scorer):
    bench = get_benchmark("mathvision")
    source, records = load_benchmark(bench, data_root)
    assert len(records) == bench.size
    assert sum(1 for r in records if r.choices) > 0  # letter answers with options are in the mix
    result = run_benchmark(
        GroundTruthGenerator("vl"),
        bench,
        records,
        VL_PROTOCOL.replace(n=2),
        tmp_path,
        geometry_scorer,
        source=source,
        model_name="ground-truth",
        backend="ground-truth",
        batch_size=512,
        progress=False,
    )
    misses, slow = _settled_misses(tmp_path, bench.name, records, "geometry")
    print(f"mathvision: {len(misses)} miss(es), {slow} time-out(s) scored again")
    assert misses == []
    assert result.metrics["pass@1"] == pytest.approx(_pass_at(tmp_path, bench.name, 1))
    assert result.metrics["pass@2"] == pytest.approx(_pass_at(tmp_path, bench.name, 2))
    done = json.loads((tmp_path / "mathvision.metrics.json").read_text())
    assert done["settings"]["num_problems"] == 304
