"""The runner with canned responses: scoring of geometry choices, crash + resume, skip, force."""

from __future__ import annotations

import json

import pytest

from mm_gmpo.data.records import Record
from mm_gmpo.evaluation.benchmarks import MATH_PROTOCOL, VL_PROTOCOL, get_benchmark
from mm_gmpo.evaluation.generators import Generated, Sample
from mm_gmpo.evaluation.report import compare, write_run_outputs
from mm_gmpo.evaluation.runner import (
    SettingsMismatch,
    metrics_path,
    predictions_path,
    read_predictions,
    run_benchmark,
)


class Canned:
    """A generator that answers from a table ``record id -> list of responses`` and records calls."""

    name = "canned"
    modality = "text"

    def __init__(
        self, answers: dict[str, list[str]], crash_after: int | None = None, truncated: bool = False
    ):
        self.answers = answers
        self.crash_after = crash_after
        self.truncated = truncated
        self.calls: list[list[str]] = []

    def generate(self, records, protocol, seed):
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise RuntimeError("simulated crash")
        self.calls.append([r.id for r in records])
        samples = [
            [Sample(text, 5, self.truncated) for text in self.answers[r.id][: protocol.n]] for r in records
        ]
        return Generated([f"prompt of {r.id}" for r in records], samples)


GEO_RECORDS = [
    Record("g0", "<image> Find x.", "5", choices=["3", "4", "5", "6"]),
    Record("g1", "<image> Find AB.", "2\\sqrt{221}"),
    Record("g2", "<image> Find y.", "B", choices=["12", "15", "18", "21"]),
]
GEO_ANSWERS = {
    "g0": [
        "<think>a</think> \\boxed{C}",
        "<think>a</think> \\boxed{5}",
        "\\boxed{B}",
        "<think>a</think> Answer: C",
    ],
    "g1": ["\\boxed{2\\sqrt{221}}", "\\boxed{29.7}", "\\boxed{30}", "no answer"],
    "g2": ["\\boxed{A}", "\\boxed{18}", "\\boxed{A}", "\\boxed{15}"],
}


def test_geometry_choices_verdicts_and_metrics(tmp_path, geometry_scorer):
    bench = get_benchmark("geometry3k")
    protocol = VL_PROTOCOL.replace(n=4)
    result = run_benchmark(
        Canned(GEO_ANSWERS),
        bench,
        GEO_RECORDS,
        protocol,
        tmp_path,
        geometry_scorer,
        source="fixed",
        model_name="m",
        backend="canned",
        progress=False,
    )
    _, rows = read_predictions(predictions_path(tmp_path, "geometry3k"))
    verdicts = [[s["correct"] for s in r["samples"]] for r in rows]
    # g0: letter C and value 5 both name the right choice; "Answer: C" counts without a box
    # g1: the exact form and its rounding 29.7 are right, 30 is not
    # g2: letter answer B = value 15
    assert verdicts == [[1, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 1]]
    assert [s["extracted"] for s in rows[0]["samples"]] == ["C", "5", "B", "C"]
    assert rows[1]["samples"][3]["extracted"] is None
    m = result.metrics
    assert m["pass@1"] == pytest.approx(0.5)  # (3/4 + 2/4 + 1/4) / 3
    assert m["pass@2"] == pytest.approx(7 / 9)  # (1 + 5/6 + 1/2) / 3
    assert m["pass@4"] == pytest.approx(1.0)
    write_run_outputs(tmp_path, label="tiny-vl")
    assert "| tiny-vl | 50.0 | 50.0 |" in compare([tmp_path])


MATH_RECORDS = [Record(f"r{i}", f"What is {i} + 1?", str(i + 1)) for i in range(5)]
MATH_ANSWERS = {f"r{i}": [f"\\boxed{{{i + 1 if i % 2 == 0 else 0}}}"] for i in range(5)}  # r0, r2, r4 right


def _run(gen, out, scorer, records=MATH_RECORDS, protocol=MATH_PROTOCOL, **kw):
    return run_benchmark(
        gen,
        get_benchmark("aime24"),
        records,
        protocol,
        out,
        scorer,
        source="fixed",
        model_name="m",
        backend="canned",
        batch_size=2,
        progress=False,
        **kw,
    )


def test_crash_loses_only_the_batch_in_flight_and_resume_matches(tmp_path, math_scorer):
    crashing = Canned(MATH_ANSWERS, crash_after=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(crashing, tmp_path / "a", math_scorer)
    _, rows = read_predictions(predictions_path(tmp_path / "a", "aime24"))
    assert [r["id"] for r in rows] == ["r0", "r1", "r2", "r3"]  # two batches of 2 survived
    assert not metrics_path(tmp_path / "a", "aime24").exists()
    # a torn line from the batch in flight is cut off on resume
    with open(predictions_path(tmp_path / "a", "aime24"), "a") as f:
        f.write('{"index": 4, "id": "r4", "samp')
    resumed = Canned(MATH_ANSWERS)
    result = _run(resumed, tmp_path / "a", math_scorer)
    assert resumed.calls == [["r4"]]
    assert result.generated_problems == 1
    fresh = _run(Canned(MATH_ANSWERS), tmp_path / "b", math_scorer)
    assert result.metrics == fresh.metrics
    assert result.metrics["pass@1"] == pytest.approx(3 / 5)
    _, rows = read_predictions(predictions_path(tmp_path / "a", "aime24"))
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]


def test_finished_benchmark_is_skipped_then_forced(tmp_path, math_scorer):
    _run(Canned(MATH_ANSWERS), tmp_path, math_scorer)
    again = Canned(MATH_ANSWERS)
    result = _run(again, tmp_path, math_scorer)
    assert result.skipped and again.calls == []
    assert result.metrics["pass@1"] == pytest.approx(3 / 5)
    all_right = {k: [f"\\boxed{{{int(k[1:]) + 1}}}"] for k in MATH_ANSWERS}
    forced = _run(Canned(all_right), tmp_path, math_scorer, force=True)
    assert not forced.skipped and forced.metrics["pass@1"] == pytest.approx(1.0)
    done = json.loads(metrics_path(tmp_path, "aime24").read_text())
    assert done["metrics"]["pass@1"] == pytest.approx(1.0)


def test_other_settings_are_refused_without_force(tmp_path, math_scorer):
    _run(Canned(MATH_ANSWERS), tmp_path, math_scorer)
    with pytest.raises(SettingsMismatch, match="max_new_tokens"):
        _run(Canned(MATH_ANSWERS), tmp_path, math_scorer, protocol=MATH_PROTOCOL.replace(max_new_tokens=100))
    with pytest.raises(SettingsMismatch, match="num_problems"):
        _run(Canned(MATH_ANSWERS), tmp_path, math_scorer, records=MATH_RECORDS[:3])


def test_truncated_responses_count_only_when_asked(tmp_path, math_scorer):
    right = {k: [f"\\boxed{{{int(k[1:]) + 1}}}"] for k in MATH_ANSWERS}
    lenient = _run(Canned(right, truncated=True), tmp_path / "a", math_scorer)
    strict = _run(
        Canned(right, truncated=True),
        tmp_path / "b",
        math_scorer,
        protocol=MATH_PROTOCOL.replace(truncated_is_wrong=True),
    )
    assert lenient.metrics["pass@1"] == pytest.approx(1.0)
    assert lenient.metrics["truncated_fraction"] == pytest.approx(1.0)
    assert strict.metrics["pass@1"] == pytest.approx(0.0)


def test_greedy_with_several_samples_is_refused():
    with pytest.raises(ValueError, match="identical samples"):
        MATH_PROTOCOL.replace(n=4)
