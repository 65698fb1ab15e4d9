"""``mm-gmpo demo``: both paths, one summary at the end, a readable log, no DeepSpeed on the way."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mm_gmpo.train.demo import DemoResult, render_summary

REPO = Path(__file__).resolve().parents[2]
DS_WARNING = "Setting accelerator to CPU"
# The shipped demos, shrunk to seconds (every override is valid for both configs).
SHRINK = [
    "warm_start.steps=1",
    "train.steps=2",
    "train.save_every=1",
    "train.prompts_per_step=4",
    "rollout.n=2",
    "rollout.max_new_tokens=3",
    "data.synthetic_train_size=32",
    "data.synthetic_eval_size=4",
    "train.log_tensorboard=false",
]
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed: nothing to keep out"
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _result(path: str, seed: int, before: float, after: float, out: str) -> DemoResult:
    return DemoResult(path, seed, before, after, 61.0, out, f"{out}/training.png", 200)


def test_summary_has_a_row_per_run_the_mean_gain_per_path_and_where_the_plots_are() -> None:
    results = [
        _result("text", 0, 0.395, 0.685, "runs/demo/seed0"),
        _result("text", 1, 0.38, 0.68, "runs/demo/seed1"),
        _result("vl", 0, 0.44, 1.0, "runs/demo_vl/seed0"),
    ]
    text = render_summary(results, 250.0)
    lines = text.splitlines()
    assert len(lines) < 25  # one screen
    assert "200 unseen prompts" in text
    rows = [line for line in lines if line.startswith(("text ", "vl "))]
    assert len(rows) == 3
    assert "0.395 ->  0.685" in rows[0] and "+29.0" in rows[0] and "1 min 01 s" in rows[0]
    assert rows[2].split()[-1] == "runs/demo_vl/seed0"
    assert "text +29.5 points (2 seeds), vl +56.0 points (1 seed); total 4 min 10 s" in text
    assert "runs/demo/seed*/training.png" in text and "runs/demo_vl/seed*/training.png" in text


@pytest.mark.slow
def test_demo_runs_text_then_vl_and_ends_with_the_summary(tmp_path: Path) -> None:
    """As ``make demo`` runs it, with stdout a file: progress lines, one line naming the
    resolved config (not the config itself), no DeepSpeed warning, the summary last."""
    cmd = [sys.executable, "-m", "mm_gmpo", "demo", "--paths", "text", "vl", "--seeds", "0", "1"]
    proc = subprocess.run(
        [*cmd, "--output-dir", str(tmp_path / "runs"), *SHRINK],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert DS_WARNING not in out + proc.stderr
    assert "loss:\n" not in out + proc.stderr  # the 70-line config is in the run directory only
    for path in ("text", "vl"):
        for seed in (0, 1):
            run = tmp_path / "runs" / path / f"seed{seed}"
            assert f"[train] resolved config: {run / 'config.yaml'}" in out
            assert (run / "config.yaml").is_file() and (run / "training.png").is_file()
            summary = json.loads((run / "summary.json").read_text())
            assert summary["steps"] == 2
    assert out.count("[train] step 2/2  reward") == 4
    summary = out[out.index("== mm-gmpo demo") :].splitlines()
    rows = [line.split() for line in summary if line.startswith(("text ", "vl "))]
    assert [(r[0], r[1]) for r in rows] == [("text", "0"), ("text", "1"), ("vl", "0"), ("vl", "1")]
    assert "(2 seeds)" in summary[-2] and "training.png" in summary[-1]


@needs_deepspeed
def test_a_torch_engine_run_does_not_import_deepspeed(tmp_path: Path) -> None:
    """Building a run (which saves the tiny model) and checkpointing it leave DeepSpeed out."""
    overrides = [f"train.output_dir={tmp_path / 'run'}", *SHRINK]
    script = f"""
import sys
from mm_gmpo.resources import config_path
from mm_gmpo.train.build import build_run
from mm_gmpo.train.config import load_config

cfg = load_config(config_path("demo_text.yaml"), {overrides!r})
assert cfg.train.engine == "torch"
run = build_run(cfg)
run.trainer.save(cfg.train.output_dir)
run.close()
print("deepspeed imported:", "deepspeed" in sys.modules)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "deepspeed imported: False" in proc.stdout
    assert DS_WARNING not in proc.stdout + proc.stderr
    assert (tmp_path / "run" / "tiny_model" / "model.safetensors").is_file()  # the save did happen
