"""Overlay figures from synthetic runs: PNGs written, every run in the legend, labels from config."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from PIL import Image

from mm_gmpo.analysis.cli_hooks import add_subcommands
from mm_gmpo.analysis.plots import load_runs, plot_runs, run_label, smooth


def _fake_run(root, name, loss, seed, steps=12, nan_at=None, path="text"):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(
        yaml.safe_dump({"modality": path, "loss": {"name": loss}, "train": {"seed": seed}})
    )
    rows = [{"step": 0, "eval_accuracy": 0.4}]
    spread = 1.0 if loss == "gmpo" else 4.0
    for s in range(1, steps + 1):
        rows.append(
            {
                "step": s,
                "reward_mean": 0.3 + 0.01 * s,
                "accuracy": 0.3 + 0.01 * s,
                "log_ratio_min": -spread * (1 + math.sin(s)) if s != nan_at else "nan",
                "log_ratio_max": 0.5 * spread,
                "clip_frac_low": 0.01,
                "clip_frac_high": 0.02,
                "entropy": 0.3 - 0.01 * s,
                "response_length": 6.0,
                "grad_norm": 0.2,
                "approx_kl": 0.01,
            }
        )
    rows.append({"step": steps, "eval_accuracy": 0.5})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_plot_runs_writes_pngs_with_every_run_in_the_legend(tmp_path):
    dirs = [
        _fake_run(tmp_path, "a", "gmpo", 0),
        _fake_run(tmp_path, "b", "gmpo", 1, nan_at=5),
        _fake_run(tmp_path, "c", "grpo", 0),
        _fake_run(tmp_path, "d", "gmpo", 0, path="vl"),
    ]
    paths = plot_runs(dirs, tmp_path / "figs", prefix="x_", smooth_window=3)
    assert [p.name for p in paths] == ["x_reward.png", "x_log_ratio.png", "x_diagnostics.png"]
    for p in paths:
        img = Image.open(p)
        assert img.size[0] > 500
        assert img.text["Legend"].splitlines() == ["gmpo seed0", "gmpo seed1", "grpo seed0", "vl gmpo seed0"]


def test_labels_from_config_made_unique_and_folder_fallback(tmp_path):
    a = _fake_run(tmp_path / "one", "r", "grpo", 2)
    b = _fake_run(tmp_path / "two", "r", "grpo", 2)
    assert run_label(a) == "grpo seed2"
    labels = [r.label for r in load_runs([a, b])]
    assert labels == ["grpo seed2 (one/r)", "grpo seed2 (two/r)"]
    (a / "config.yaml").unlink()
    assert run_label(a) == "r"
    assert [r.label for r in load_runs([a], labels=["mine"])] == ["mine"]


def test_missing_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        load_runs([tmp_path])


def test_smooth_skips_non_finite():
    assert smooth([1.0, math.nan, 3.0], 2) == [1.0, 1.0, 3.0]
    assert smooth([1.0, 2.0], 1) == [1.0, 2.0]


def test_plot_subcommand(tmp_path, capsys):
    import argparse

    dirs = [_fake_run(tmp_path, "a", "gmpo", 0), _fake_run(tmp_path, "c", "grpo", 0)]
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["plot", *map(str, dirs), "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "compare_diagnostics.png",
        "compare_log_ratio.png",
        "compare_reward.png",
    ]


def test_a_clip_set_in_the_config_names_its_own_family():
    from mm_gmpo.analysis.plots import run_family

    assert run_family({"loss": {"name": "gmpo", "clip_low": None, "clip_high": None}}) == "gmpo"
    assert (
        run_family({"loss": {"name": "gmpo", "clip_low": 0.2231, "clip_high": 0.1823}})
        == "gmpo@0.2231/0.1823"
    )
    assert run_family({"loss": {"name": "grpo", "clip_low": 0.3}}) == "grpo@0.3/0.2"
    assert run_family({"modality": "vl", "loss": {"name": "gmpo", "clip_high": 0.4}}) == "vl gmpo@0.4"
