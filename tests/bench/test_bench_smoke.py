"""Each benchmark runs at a tiny size and writes its row; RESULTS.md renders from the rows.

No timing is asserted here (the machine is shared and noisy): only that every script runs,
writes ``row<N>.json`` with the fields the table needs, and that the renderer puts each row in
the table. The figures themselves come from ``python bench/run_all.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mm_gmpo.testing.modules import load_module_file

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
HAS_BENCH_VENV = (REPO / ".venv-bench" / "bin" / "python").exists()
HAS_VLLM_VENV = (REPO / ".venv-vllm" / "bin" / "python").exists()


def _run(script: str, out: Path, *args: str, timeout: float = 600) -> dict:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--out", str(out), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _row(out: Path, n: int) -> dict:
    path = out / f"row{n}.json"
    assert path.exists(), f"row{n}.json not written"
    row = json.loads(path.read_text())
    assert row["row"] == n
    for key in ("name", "figure", "value", "baseline_value", "ratio", "status", "conditions", "machine"):
        assert key in row
    assert row["machine"]["cores_available"] >= 1
    return row


def _load_run_all():
    return load_module_file(BENCH / "run_all.py", "bench_run_all")


def test_row3_objective_checks_equality_and_writes_row(tmp_path):
    _run("bench_objective.py", tmp_path, "--batch", "4", "--seq", "32", "--repeats", "1")
    row = _row(tmp_path, 3)
    assert row["value"] > 0 and row["baseline_value"] > 0
    assert row["ratio"] == pytest.approx(row["value"] / row["baseline_value"])
    assert row["details"]["grpo_ms_median"] > 0


def test_row3_reference_matches_batched_loss():
    import torch

    mod = load_module_file(BENCH / "bench_objective.py", "bench_objective")
    from mm_gmpo.objective import compute_policy_loss

    logp, old, adv, mask, lengths = mod.make_batch(6, 20, seed=3)
    a = logp.clone().requires_grad_(True)
    compute_policy_loss("gmpo", a, old, adv, mask)[0].backward()
    b = logp.clone().requires_grad_(True)
    mod.reference_gmpo_loss(b, old, adv, lengths).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-9)


def test_row4_verifier_writes_row(tmp_path, data_root):  # bench_rewards.py reads data/math/math500.jsonl
    _run("bench_verifier.py", tmp_path, "--runs", "1", "--rounds", "1")
    row = _row(tmp_path, 4)
    assert row["value"] > 0 and row["baseline_value"] > 0
    assert row["details"]["errors"] == [0]


def test_row1_mm_gmpo_side_without_trl_env_writes_row(tmp_path):
    _run(
        "bench_step.py",
        tmp_path,
        *("--prompts", "2", "--n", "2", "--max-new-tokens", "3", "--micro-batch", "2", "--records", "8"),
        *("--warmup", "1", "--steps", "1", "--rounds", "1", "--bench-venv", "no-such-venv"),
    )
    row = _row(tmp_path, 1)
    assert row["value"] > 0
    assert row["status"] == "baseline not measured" and "no-such-venv" in row["conditions"]
    assert row["details"]["mm_gmpo_phases_median_s"]["generate"] > 0


@pytest.mark.skipif(
    not HAS_BENCH_VENV, reason=".venv-bench absent: run `bash bench/setup_bench_env.sh` (TRL)"
)
def test_row1_against_trl_writes_ratio(tmp_path):
    _run(
        "bench_step.py",
        tmp_path,
        *("--prompts", "2", "--n", "2", "--max-new-tokens", "3", "--micro-batch", "2", "--records", "8"),
        *("--warmup", "1", "--steps", "1", "--rounds", "1"),
    )
    row = _row(tmp_path, 1)
    assert row["status"] == "measured"
    assert row["baseline_value"] > 0 and row["ratio"] == pytest.approx(row["value"] / row["baseline_value"])
    assert row["details"]["trl_version"]


@pytest.mark.skipif(not HAS_VLLM_VENV, reason=".venv-vllm absent: run `bash scripts/setup_vllm_env.sh`")
def test_row2_rollout_writes_row(tmp_path):
    _run(
        "bench_rollout_row.py",
        tmp_path,
        *("--runs", "1", "--prompts", "2", "--n", "2", "--max-new-tokens", "4", "--repeats", "1"),
    )
    row = _row(tmp_path, 2)
    assert row["value"] > 0 and row["baseline_value"] > 0


@pytest.mark.skipif(not HAS_VLLM_VENV, reason=".venv-vllm absent: run `bash scripts/setup_vllm_env.sh`")
def test_row9_vl_rollout_writes_row(tmp_path):
    _run(
        "bench_rollout_row.py",
        tmp_path,
        *("--vl", "--runs", "1", "--prompts", "4", "--n", "2", "--max-new-tokens", "4", "--repeats", "1"),
    )
    row = _row(tmp_path, 9)
    assert row["value"] > 0 and row["baseline_value"] > 0 and "Qwen2.5-VL" in row["conditions"]
    assert row["details"]["runs"][0]["ratio"] > 0


def test_row2_without_vllm_env_says_so(tmp_path):
    _run("bench_rollout_row.py", tmp_path, "--venv", "no-such-venv")
    row = _row(tmp_path, 2)
    assert row["status"] == "not measured" and "no-such-venv" in row["conditions"]


def test_row5_quick_demo_writes_row(tmp_path):
    _run("bench_demo.py", tmp_path, "--quick", "--runs", "1", "--only", "text")
    row = _row(tmp_path, 5)
    text = row["details"]["demos"]["text"]
    assert text["ok_runs"] == 1, text
    assert text["wall_s"] > 0 and text["peak_rss_mb"] > 50


def test_row6_gpu_step_dry_run_counts_flops(tmp_path):
    _run("gpu_step.py", tmp_path, "--dry-run")
    row = _row(tmp_path, 6)
    assert row["status"] == "not measured"
    d = row["details"]
    assert 1.4e9 < d["params"] < 1.7e9  # Qwen2.5-1.5B
    assert d["flops_per_token"] > 6 * d["matmul_params"]


def test_profile_and_render(tmp_path):
    _run(
        "profile_step.py",
        tmp_path,
        *("--prompts", "2", "--n", "2", "--max-new-tokens", "3", "--micro-batch", "2", "--steps", "1"),
        *("--warmup", "0", "--rate", "200"),
    )
    profile = json.loads((tmp_path / "profile.json").read_text())
    assert "error" in profile or profile["slowest_phase"]
    _run("gpu_step.py", tmp_path, "--dry-run")
    _run("bench_objective.py", tmp_path, "--batch", "4", "--seq", "16", "--repeats", "1")
    run_all = _load_run_all()
    md = tmp_path / "RESULTS.md"
    text = run_all.render(tmp_path, md)
    assert md.read_text() == text
    assert "| 3 |" in text and "| 6 |" in text and "no GPU lent" in text
    assert "## Machine" in text and "## Targets and limits" in text


def test_row7_logprobs_three_variants_equal_and_render(tmp_path):
    """Smoke size: every variant runs in its own process and agrees with the reference."""
    _run(
        "bench_logprobs.py",
        tmp_path,
        *("--prompt", "12", "--response", "30", "--vocab", "3000", "--rounds", "1", "--ragged"),
    )
    row = _row(tmp_path, 7)
    d = row["details"]
    assert set(d["peak_extra_mb"]) == {"reference", "chunked", "trl"}
    assert all(v is not None and v >= 0 for v in d["peak_extra_mb"].values())
    assert row["ratio"] == pytest.approx(d["peak_extra_mb"]["chunked"] / d["peak_extra_mb"]["reference"])
    parity = d["parity_vs_reference"]
    assert parity["chunked_logp_max_rel_diff"] < 1e-5 and parity["trl_logp_max_rel_diff"] < 1e-5
    assert parity["chunked_grad_embed_rows_max_rel_diff"] < 1e-5
    text = _load_run_all().render(tmp_path, tmp_path / "RESULTS.md")
    assert "| 7 |" in text and "memory **" in text


def test_row8_padding_writes_row_and_renders(tmp_path):
    _run("bench_padding.py", tmp_path, "--prompts", "32", "--time-prompts", "2", "--rounds", "1")
    row = _row(tmp_path, 8)
    d = row["details"]
    assert 0 <= row["value"] < row["baseline_value"] < 1  # packing cuts padding even on a small draw
    assert d["timing"]["median_s"]["fixed"] > 0 and d["timing"]["median_s"]["budget"] > 0
    assert row["ratio"] == pytest.approx(d["timing"]["median_s"]["budget"] / d["timing"]["median_s"]["fixed"])
    text = _load_run_all().render(tmp_path, tmp_path / "RESULTS.md")
    assert "| 8 |" in text and "% padded" in text


def test_row10_full_vs_lora_writes_row_and_renders(tmp_path):
    _run("bench_lora.py", tmp_path, "--hidden", "64", "--layers", "1", "--rows", "2", "--rounds", "1")
    row = _row(tmp_path, 10)
    v = row["details"]["variants"]
    assert v["lora"]["trainable_params"] < v["full"]["trainable_params"] / 5
    # no gradients or AdamW states for the base: LoRA's step needs less tensor memory
    assert v["lora"]["step_peak_mb"] < v["full"]["step_peak_mb"]
    assert row["ratio"] == pytest.approx(v["lora"]["peak_mb"] / v["full"]["peak_mb"])
    text = _load_run_all().render(tmp_path, tmp_path / "RESULTS.md")
    assert "| 10 |" in text and "LoRA" in text


def test_memory_plan_bench_writes_its_comparison(tmp_path):
    _run("bench_memory_plan.py", tmp_path, "--prompt", "32", "--response", "32", "--vocab", "1024")
    report = json.loads((tmp_path / "memory_plan.json").read_text())
    rows = report["results"]
    assert [(r["case"], r["gradient_checkpointing"]) for r in rows] == [
        ("vocab", False),
        ("vocab", True),
        ("act", False),
        ("act", True),
    ]
    for r in rows:
        assert r["measured_peak_gib"] > 0 and r["peak_ratio_measured_over_planned"] > 0
        if not r["gradient_checkpointing"]:  # what autograd saves is what the plan counts
            assert r["saved_activations_gib"] == pytest.approx(r["planned_activations_gib"], abs=2e-4)
