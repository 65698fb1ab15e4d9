"""Verifier ceiling through the evaluation code path: each benchmark's own ground truth as the
response must score 100% (generation -> jsonl -> scorer -> metrics, as for a model)."""

from __future__ import annotations

import json

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

# (benchmark, record id) -> why the ground truth does not verify against itself. Empty: none.
AMBIGUOUS: dict[tuple[str, str], str] = {}


def _misses(out, name):
    _, rows = read_predictions(predictions_path(out, name))
    return [(r["id"], r["answer"]) for r in rows if r["samples"][0]["correct"] != 1.0]


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
        misses = [m for m in _misses(tmp_path, bench.name) if (bench.name, m[0]) not in AMBIGUOUS]
        print(f"{bench.name}: ceiling {100 * result.metrics['pass@1']:.1f}% of {result.metrics['problems']}")
        assert misses == []
        assert result.metrics["timeouts"] == 0


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
    assert _misses(tmp_path, bench.name) == []
    assert result.metrics["pass@1"] == pytest.approx(1.0)
    assert result.metrics["pass@2"] == pytest.approx(1.0)
    done = json.loads((tmp_path / "mathvision.metrics.json").read_text())
    assert done["settings"]["num_problems"] == 304
