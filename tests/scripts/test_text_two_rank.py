"""The text recipe's launcher, shrunk by overrides, trains 2 steps on 2 CPU ranks (gloo).

Same script, same paper YAML: only the model (tiny Qwen2), the data (synthetic), the sizes and
the rollout engine (transformers generate instead of vLLM) are overridden; DeepSpeed ZeRO-2 and
gradient checkpointing stay as in the recipe. Each rank generates its own prompt groups.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from mm_gmpo.testing.modules import load_module_file
from mm_gmpo.train import dist

HERE = Path(__file__).resolve().parent


H = load_module_file(HERE / "launcher_helpers.py", "launcher_helpers")

PROMPTS, N = 4, 2  # per step, over both ranks; samples per prompt
SHRINK = [
    "model.dtype=fp32",
    "rollout.engine=hf",
    "data.template=none",
    "data.max_prompt_len=64",
    "data.synthetic_train_size=64",
    f"rollout.n={N}",
    "rollout.max_new_tokens=8",
    "rollout.batch_size=8",
    f"train.prompts_per_step={PROMPTS}",
    "train.mini_batches=4",  # 2 groups of 2 per rank: the cut falls between rollouts
    "train.micro_batch_size=8",
    "reward.num_workers=1",
    "train.progress=false",
    "train.log_tensorboard=false",
]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_text_script_trains_two_steps_on_two_cpu_ranks(tmp_path: Path, launcher: str) -> None:
    out = tmp_path / "run"
    cmd = ["bash", str(H.SCRIPTS / "train_text_gmpo.sh"), *SHRINK]
    env = H.script_env(
        LAUNCHER=launcher,
        NPROC_PER_NODE="2",
        MASTER_PORT=str(dist.free_port()),
        MODEL="tiny:qwen2",
        TRAIN_DATA="synthetic:compare",
        OUTPUT_DIR=str(out),
        STEPS="2",
    )
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(
            timeout=900
        )  # a hang guard, not a speed check: DeepSpeed may compile first
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the script, the launcher and both ranks
        stdout, stderr = proc.communicate()
        pytest.fail(f"two-rank run timed out:\n{stdout[-2000:]}\n{stderr[-4000:]}")
    assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]

    # the resolved config is printed first and is the one the run used and wrote
    assert stdout.startswith("# resolved config")
    printed = H.resolved_config(stdout)
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written == printed
    assert written["train"]["engine"] == "deepspeed" and written["train"]["zero_stage"] == 2
    assert written["model"]["gradient_checkpointing"] is True
    assert (written["loss"]["name"], written["loss"]["clip_low"], written["loss"]["clip_high"]) == (
        "gmpo",
        0.4,
        0.4,
    )
    assert "world size 2" in (out / "launch.txt").read_text()

    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2
    assert Path(summary["checkpoint"]).is_dir()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    # rank 0 trained on its own share of prompt groups: half the prompts, all N samples each
    assert all(m["rows_trained"] == PROMPTS // 2 * N for m in metrics)
    assert all(m["lr"] == pytest.approx(1e-6) for m in metrics)
