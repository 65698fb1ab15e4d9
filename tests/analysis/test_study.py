"""The study's statistics and report on synthetic runs (fast), and the --quick study end to end (slow)."""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mm_gmpo.analysis.study import (
    RunResult,
    comparison_pairs,
    discover_tasks,
    parse_arm,
    run_overrides,
    run_stats,
    summarize,
    verdicts,
    write_report,
)

from .test_plots import _fake_run

REPO = Path(__file__).resolve().parents[2]


def _result(d, loss, seed, before=0.4, after=0.5, rc=0):
    return RunResult(
        "text", loss, seed, d, rc, 1.0, {"eval_accuracy_before": before, "eval_accuracy_after": after}
    )


def test_stats_table_and_report(tmp_path):
    results = [
        _result(_fake_run(tmp_path, "g0", "gmpo", 0), "gmpo", 0),
        _result(_fake_run(tmp_path, "g1", "gmpo", 1, nan_at=3), "gmpo", 1),
        _result(_fake_run(tmp_path, "p0", "grpo", 0), "grpo", 0, after=0.1),
        _result(_fake_run(tmp_path, "p1", "grpo", 1), "grpo", 1),
    ]
    for r in results:
        r.stats = run_stats(r)
    g0 = results[0].stats
    assert g0["steps"] == 12 and g0["diverged"] == ""
    # range = max - min per step: 0.5 - (-(1 + sin s)) = 1.5 + sin s
    assert g0["range_median"] == pytest.approx(statistics.median(1.5 + math.sin(s) for s in range(1, 13)))
    assert results[1].stats["diverged"] == "NaN/inf"
    assert "held-out accuracy 0.40 -> 0.10" in results[2].stats["diverged"]
    assert results[3].stats["eval_peak"] == 0.5  # the fake runs log 0.4 then 0.5: no collapse
    rows = summarize(results)
    assert [(r["loss"], r["n"]) for r in rows] == [("gmpo", 2), ("grpo", 2)]
    assert rows[0]["range_median"] < rows[1]["range_median"]
    assert len(rows[0]["diverged"]) == 1 and len(rows[1]["diverged"]) == 1
    (v,) = verdicts(rows)
    assert "**narrower**" in v and "2 of 2" in v
    settings = {
        "command": "mm-gmpo study --test",
        "tasks": ["text"],
        "losses": ["gmpo", "grpo"],
        "seeds": [0, 1],
        "task_setup": {
            "text": {"updates": 2, "stressed_updates": 8, "lr": 5e-4, "stressed_lr": 1e-3, "steps": 12}
        },
        "eval_every": 0,
        "eval_limit": 0,
        "extra": [],
        "jobs": 1,
        "omp": "1",
        "smooth": 1,
        "machine": "test",
        "wall_s": 1.0,
        "load": ["0.0", "0.0"],
        "runs_span_s": 60.0,
    }
    report = write_report(
        tmp_path, results, rows, {}, {"vl": "configs/demo_vl.yaml does not exist"}, settings
    )
    text = report.read_text()
    assert "| text | gmpo |" in text and "| text | grpo |" in text
    assert "Not run: **vl**" in text
    assert "text 8 (2), lr 0.001 (0.0005), 12 RL steps" in text
    assert "`gmpo` clip 0.4 / 0.4 in log space, one token's ratio held to [0.67, 1.49]" in text
    assert json.loads((tmp_path / "results.json").read_text())["table"][0]["loss"] == "gmpo"


def test_crashed_run_is_reported(tmp_path):
    r = RunResult("text", "grpo", 0, tmp_path / "missing", 1, 0.5, {})
    r.stats = run_stats(r)
    assert r.stats["diverged"] == "crashed before logging"


def test_text_task_is_discovered():
    tasks, skipped = discover_tasks(["text"])
    assert [t.name for t in tasks] == ["text"]
    assert skipped == {"vl": "not requested: --tasks", "sorted": "not requested: --tasks"}


def test_every_shipped_task_loads():
    tasks, skipped = discover_tasks(None)
    assert [t.name for t in tasks] == ["text", "vl", "sorted"] and skipped == {}


def test_arms_parse_to_clip_overrides_and_ratio_bounds(tmp_path):
    gmpo, grpo = parse_arm("gmpo"), parse_arm("grpo")
    assert gmpo.overrides == ["loss.name=gmpo"] and not gmpo.explicit_clip
    assert gmpo.ratio_bounds == pytest.approx((math.exp(-0.4), math.exp(0.4)))
    assert grpo.ratio_bounds == pytest.approx((0.8, 1.2))
    narrow = parse_arm("gmpo@0.2231/0.1823")
    assert narrow.overrides == ["loss.name=gmpo", "loss.clip_low=0.2231", "loss.clip_high=0.1823"]
    assert narrow.ratio_bounds == pytest.approx((0.8, 1.2), abs=1e-4)
    assert parse_arm("grpo@0.3").ratio_bounds == pytest.approx((0.7, 1.3))
    (task,) = discover_tasks(["text"])[0]
    ov = run_overrides(task, narrow, 2, tmp_path, 5, 0, 0, ["optim.lr=1e-4"])
    assert ov.index("loss.clip_low=0.2231") > ov.index("train.ppo_epochs=4")  # the arm wins over the stress
    assert ov[-1] == "optim.lr=1e-4" and "train.seed=2" in ov
    for bad, message in [
        ("ppo", "unknown loss 'ppo'"),
        ("grpo@1.5", "ratio space: LOW below 1"),
        ("gmpo@a/b", "LOSS@EPS or LOSS@LOW/HIGH"),
        ("gmpo@0.1/0.2/0.3", "LOSS@EPS or LOSS@LOW/HIGH"),
        ("gmpo@0", "positive"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_arm(bad)


@pytest.mark.parametrize("command", ["study", "probe"])
def test_bad_arm_is_a_one_line_error_before_any_run(command, capsys, tmp_path):
    from mm_gmpo.cli import main

    assert (
        main(
            [
                command,
                "--losses",
                "gmpo",
                "grpo@1.5",
                *(["--runs-dir", str(tmp_path)] if command == "study" else []),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"mm-gmpo {command}: error: study arm 'grpo@1.5'" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_pairs_at_paper_defaults_and_at_matched_trust_regions():
    labels = ["gmpo", "grpo", "gmpo@0.2231/0.1823", "grpo@0.3297/0.4918", "grpo@0.3"]
    pairs = [(g, p) for g, p, _ in comparison_pairs(labels)]
    assert pairs == [("gmpo", "grpo"), ("gmpo", "grpo@0.3297/0.4918"), ("gmpo@0.2231/0.1823", "grpo")]
    assert comparison_pairs(["gmpo", "grpo@0.3"]) == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_study_end_to_end(tmp_path):
    # The default task set (text and VL demos, the multi-token sorted task), as users run it.
    out = tmp_path / "report"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mm_gmpo.analysis",
            "study",
            "--quick",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--out-dir",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = (out / "REPORT.md").read_text()
    for task in ("text", "vl", "sorted"):
        assert f"| {task} | gmpo |" in text and f"| {task} | grpo |" in text
        for name in ("reward", "log_ratio", "diagnostics"):
            assert (out / f"{task}_{name}.png").is_file()
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 6
    assert all(r["returncode"] == 0 and r["steps"] == 6 for r in results["runs"])
    print(f"quick study: {wall:.0f} s")


def test_fall_from_peak_counts_as_collapse(tmp_path):
    r = _result(_fake_run(tmp_path, "g", "gmpo", 0), "gmpo", 0, before=0.4, after=0.35)
    r.stats = run_stats(r)
    assert r.stats["diverged"] == "held-out accuracy fell from its peak 0.50 to 0.35"
