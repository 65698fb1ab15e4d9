"""Every launcher in scripts/ dry-runs here (no GPU), and the resolved configs carry the paper's
recipe numbers; the world-size arithmetic, the multi-node launch commands, the run-directory
config and the DeepSpeed reference configs are checked too.
"""

from __future__ import annotations

import io
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image

from mm_gmpo.testing.modules import load_module_file

HERE = Path(__file__).resolve().parent


H = load_module_file(HERE / "launcher_helpers.py", "launcher_helpers")
REPO, SCRIPTS = H.REPO, H.SCRIPTS

# scripts/ files that are not launchers (environment set-up and the shared library).
NOT_LAUNCHERS = {"setup_env.sh", "setup_vllm_env.sh", "setup_lib.sh", "test_vllm.sh", "launch_lib.sh"}
# Each launcher and the test that dry-runs it; a new script without one fails below.
DRY_RUN_TESTS = {
    "train_text_gmpo.sh": "test_text_dry_run_is_the_paper_recipe",
    "train_vl_gmpo_geo3k.sh": "test_vl_dry_run_is_easyr1s_geometry3k_recipe",
    "eval_math.sh": "test_eval_math_dry_run_uses_the_paper_protocol",
    "eval_geometry3k.sh": "test_eval_geometry3k_dry_run_uses_the_vl_protocol",
}

TEXT_RECIPE = {
    "modality": "text",
    "model": {"path": "Qwen/Qwen2.5-Math-7B", "dtype": "bf16", "gradient_checkpointing": True},
    "data": {"template": "qwen_math", "max_prompt_len": 1024},
    "rollout": {
        "engine": "vllm",
        "n": 8,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_new_tokens": 3000,
        "vllm_tp": 1,
        "vllm_sleep_level": 1,
    },
    "loss": {"name": "gmpo", "clip_low": 0.4, "clip_high": 0.4, "kl_coef": 0.0},
    "optim": {"lr": 1e-6, "scheduler": "constant", "warmup_steps": 0, "grad_clip": 1.0},
    "reward": {"kind": "math"},
    "warm_start": {"steps": 0},
    "train": {
        "prompts_per_step": 128,
        "ppo_epochs": 1,
        "mini_batches": 8,
        "engine": "deepspeed",
        "zero_stage": 2,
    },
}

# The paper's third text row (configs/paper_text_r1distill_gmpo.yaml; sources in its comments and
# in scripts/README.md): what the paper states, plus this project's choices where it is silent.
R1DISTILL_RECIPE = {
    "modality": "text",
    "model": {
        "path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "dtype": "bf16",
        "gradient_checkpointing": True,
    },
    "data": {
        "train": "agentica-org/DeepScaleR-Preview-Dataset@train",
        "question_key": "problem",
        "answer_key": "answer",
        "template": "r1_distill",
        "chat_template": "",
        "max_prompt_len": 1024,
        "on_bad_record": "skip",
    },
    "rollout": {
        "engine": "vllm",
        "n": 8,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_new_tokens": 8192,
        "gpu_memory_utilization": 0.5,
        "vllm_sleep_level": 1,
    },
    "loss": {"name": "gmpo", "clip_low": 0.4, "clip_high": 0.4, "kl_coef": 0.0},
    "optim": {"lr": 1e-6, "scheduler": "constant", "warmup_steps": 0, "grad_clip": 1.0},
    "reward": {"kind": "math"},
    "warm_start": {"steps": 0},
    "train": {
        "steps": 800,
        "prompts_per_step": 128,
        "ppo_epochs": 1,
        "mini_batches": 8,
        "engine": "deepspeed",
        "zero_stage": 2,
    },
}

VL_RECIPE = {
    "modality": "vl",
    "model": {"path": "Qwen/Qwen2.5-VL-7B-Instruct", "dtype": "bf16"},
    "data": {"template": "geometry", "max_prompt_len": 2048},
    "rollout": {"engine": "vllm", "n": 5, "temperature": 1.0, "max_new_tokens": 2048},
    "loss": {"name": "gmpo", "clip_low": 0.4, "clip_high": 0.4},
    "optim": {"lr": 1e-6, "weight_decay": 1e-2, "grad_clip": 1.0},
    "reward": {"kind": "geometry", "accuracy_weight": 0.9, "format_weight": 0.1},
    "train": {
        "prompts_per_step": 512,
        "ppo_epochs": 1,
        "mini_batches": 4,
        "engine": "deepspeed",
        "zero_stage": 2,
    },
}
# The VL path's image budget (EasyR1): fields of the VL model config once it has them.
VL_PIXELS = {"min_pixels": 262144, "max_pixels": 4194304, "freeze_vision_tower": False}


def assert_recipe(resolved: dict, recipe: dict) -> None:
    for section, expected in recipe.items():
        if not isinstance(expected, dict):
            assert resolved[section] == expected, section
            continue
        for key, value in expected.items():
            got = resolved[section][key]
            assert got == pytest.approx(value) if isinstance(value, float) else got == value, (
                f"{section}.{key}: {got!r} != {value!r}"
            )


def dry_run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = H.run_script(script, "--dry-run", *args, **env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def summary_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("# dry run OK"))


# ------------------------------------------------------------------ coverage of scripts/


def test_every_launcher_has_a_dry_run_test() -> None:
    launchers = {p.name for p in SCRIPTS.glob("*.sh")} - NOT_LAUNCHERS
    assert launchers == set(DRY_RUN_TESTS), "add the new script to DRY_RUN_TESTS with a dry-run test"
    for name in DRY_RUN_TESTS.values():
        assert callable(globals().get(name)), name


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_are_shellcheck_clean() -> None:
    files = sorted(str(SCRIPTS / name) for name in [*DRY_RUN_TESTS, "launch_lib.sh"])
    proc = subprocess.run(["shellcheck", "-x", *files], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


# ------------------------------------------------------------------ training recipes


def test_text_dry_run_is_the_paper_recipe() -> None:
    proc = dry_run("train_text_gmpo.sh")
    assert proc.stdout.startswith("# resolved config")  # printed first
    cfg = H.resolved_config(proc.stdout)
    assert_recipe(cfg, TEXT_RECIPE)
    assert cfg["data"]["train"].endswith("math/math_lvl3to5_train.jsonl")
    assert cfg["train"]["output_dir"] == "runs/text_gmpo_Qwen2.5-Math-7B"
    line = summary_line(proc.stdout)
    assert "world size 8" in line and "16 prompts x 8 samples per rank" in line
    # the per-GPU memory plan follows, as YAML comments: the recipe fits 8 x 80 GB
    assert "# memory plan per GPU: Qwen/Qwen2.5-Math-7B, 8 GPU(s) of 80 GiB" in proc.stdout
    assert "fits in 80 GiB" in proc.stdout


def test_text_r1distill_dry_run_is_the_paper_row() -> None:
    proc = dry_run("train_text_gmpo.sh", RECIPE="r1distill")
    cfg = H.resolved_config(proc.stdout)
    assert "paper_text_r1distill_gmpo.yaml" in proc.stdout.splitlines()[0]
    assert_recipe(cfg, R1DISTILL_RECIPE)
    assert cfg["train"]["output_dir"] == "runs/text_gmpo_DeepSeek-R1-Distill-Qwen-7B"
    line = summary_line(proc.stdout)
    assert "world size 8, 16 prompts x 8 samples per rank" in line
    assert "8 optimizer step(s) per pass" in line  # 8 updates of 128 rollouts per rollout batch
    # 8k-token responses fit 8 x 80 GB with the recipe's memory settings, and 8 x 141 GB
    assert "# memory plan per GPU: deepseek-ai/DeepSeek-R1-Distill-Qwen-7B, 8 GPU(s) of 80 GiB" in proc.stdout
    assert "16384-token budget, 28 layers, checkpointed" in proc.stdout
    assert "peak           rollout  72.1  fits in 80 GiB" in proc.stdout
    h200 = dry_run("train_text_gmpo.sh", RECIPE="r1distill", GPU_MEM="141")
    assert "fits in 141 GiB" in h200.stdout
    # without checkpointing the 8k-token rows do not fit, and the plan says which part to shrink
    big = H.run_script(
        "train_text_gmpo.sh", "--dry-run", "model.gradient_checkpointing=false", RECIPE="r1distill"
    )
    assert big.returncode == 2 and "does NOT fit in 80 GiB" in big.stderr
    assert "activations" in big.stderr and "gradient_checkpointing" in big.stderr
    local = dry_run("train_text_gmpo.sh", RECIPE="r1distill", TRAIN_DATA="deepscaler/deepscaler.json")
    assert H.resolved_config(local.stdout)["data"]["train"] == "deepscaler/deepscaler.json"
    bad = H.run_script("train_text_gmpo.sh", "--dry-run", RECIPE="r1")
    assert bad.returncode == 2 and "RECIPE must be qwen_math or r1distill, got 'r1'" in bad.stderr


def test_memory_plan_over_gpu_mem_stops_the_launch() -> None:
    proc = H.run_script("train_text_gmpo.sh", "--dry-run", GPU_MEM="40")
    assert proc.returncode == 2
    assert "does NOT fit in 40 GiB" in proc.stderr  # the plan is shown with the error
    assert (
        "config error: memory plan: the rollout phase needs 46.1 GiB per GPU, over --gpu-mem 40"
        in proc.stderr
    )
    assert "train.zero_stage=3" in proc.stderr


def test_text_env_gives_the_grpo_baseline_and_the_small_model() -> None:
    base = H.resolved_config(dry_run("train_text_gmpo.sh").stdout)
    proc = dry_run(
        "train_text_gmpo.sh", LOSS="grpo", MODEL="Qwen/Qwen2.5-Math-1.5B", OUTPUT_DIR="runs/x", STEPS="7"
    )
    cfg = H.resolved_config(proc.stdout)
    assert cfg["loss"]["name"] == "grpo"
    # GRPO keeps its own ratio-space clip (0.2) instead of GMPO's log-space 0.4
    assert cfg["loss"]["clip_low"] is None and cfg["loss"]["clip_high"] is None
    assert cfg["model"]["path"] == "Qwen/Qwen2.5-Math-1.5B"
    assert (cfg["train"]["output_dir"], cfg["train"]["steps"]) == ("runs/x", 7)
    for section in ("data", "rollout", "optim", "reward"):
        assert cfg[section] == base[section], section  # nothing else of the recipe moved
    explicit = H.resolved_config(dry_run("train_text_gmpo.sh", LOSS="grpo", CLIP_HIGH="0.28").stdout)
    assert (explicit["loss"]["clip_low"], explicit["loss"]["clip_high"]) == (None, 0.28)


def test_overrides_from_arguments_and_extra_args() -> None:
    proc = dry_run(
        "train_text_gmpo.sh", "optim.lr=2e-6", "rollout.n=4", EXTRA_ARGS="train.seed=3 rollout.top_p=0.9"
    )
    cfg = H.resolved_config(proc.stdout)
    assert cfg["optim"]["lr"] == pytest.approx(2e-6)
    assert (cfg["rollout"]["n"], cfg["train"]["seed"], cfg["rollout"]["top_p"]) == (4, 3, 0.9)
    bad = H.run_script("train_text_gmpo.sh", "--dry-run", "optim.lrr=1")
    assert bad.returncode == 2 and "did you mean optim.lr" in bad.stderr


def test_vl_dry_run_is_easyr1s_geometry3k_recipe() -> None:
    from mm_gmpo.train.config import ModelConfig

    proc = dry_run("train_vl_gmpo_geo3k.sh")
    cfg = H.resolved_config(proc.stdout)
    assert_recipe(cfg, VL_RECIPE)
    assert cfg["data"]["train"].endswith("geometry3k/train.parquet")
    line = summary_line(proc.stdout)
    assert "world size 8" in line and "64 prompts x 5 samples per rank" in line
    assert "4 optimizer step(s) per pass" in line  # global batch 128 of the 512 rollout prompts
    assert "# memory plan per GPU: Qwen/Qwen2.5-VL-7B-Instruct, 8 GPU(s) of 80 GiB" in proc.stdout
    assert "vision tower" in proc.stdout and "fits in 80 GiB" in proc.stdout
    for key, value in VL_PIXELS.items():
        assert key in ModelConfig.__dataclass_fields__, f"model.{key}"
        assert cfg["model"][key] == value, f"model.{key}"


# ------------------------------------------------------------------ world size and launchers


def test_world_size_arithmetic_is_validated() -> None:
    two_nodes = dry_run("train_text_gmpo.sh", NNODES="2", NPROC_PER_NODE="8")
    assert "world size 16" in summary_line(two_nodes.stdout)
    assert "8 prompts x 8 samples per rank" in summary_line(two_nodes.stdout)
    one_gpu = dry_run("train_text_gmpo.sh", GPUS="1", MODEL="Qwen/Qwen2.5-Math-1.5B")
    assert "world size 1, 128 prompts" in summary_line(one_gpu.stdout)
    # the 7B's model states alone (ZeRO-2 over one rank) exceed one 80 GB GPU: the plan says so
    big = H.run_script("train_text_gmpo.sh", "--dry-run", GPUS="1")
    assert big.returncode == 2 and "world size 1, 128 prompts" in big.stderr
    assert "model states" in big.stderr and "train.zero_stage=3" in big.stderr

    odd = H.run_script("train_text_gmpo.sh", "--dry-run", NPROC_PER_NODE="3")
    assert odd.returncode == 2
    assert "prompts_per_step=128 must divide by the world size 3" in odd.stderr
    # 32 nodes x 8: 2 prompts x 5 samples per rank fill EasyR1's 4 mini-batches (cut between
    # rollouts), but not 16
    wide = dry_run("train_vl_gmpo_geo3k.sh", NNODES="32")
    assert "world size 256" in summary_line(wide.stdout)
    too_many = H.run_script("train_vl_gmpo_geo3k.sh", "--dry-run", "train.mini_batches=16", NNODES="32")
    assert too_many.returncode == 2 and "train.mini_batches=16 exceeds the 10 rollouts" in too_many.stderr


def test_zero_stage_and_offload_from_the_environment() -> None:
    cfg = H.resolved_config(dry_run("train_text_gmpo.sh", ZERO_STAGE="3").stdout)
    assert cfg["train"]["zero_stage"] == 3
    proc = H.run_script("train_text_gmpo.sh", "--dry-run", ZERO_STAGE="3", OFFLOAD="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert H.resolved_config(proc.stdout)["train"]["offload"] is True


def test_lora_rank_from_the_environment() -> None:
    for script in ("train_text_gmpo.sh", "train_vl_gmpo_geo3k.sh"):
        proc = dry_run(script, LORA_RANK="16")
        assert H.resolved_config(proc.stdout)["model"]["lora_rank"] == 16
        assert H.resolved_config(dry_run(script).stdout)["model"]["lora_rank"] == 0
    bad = H.run_script("train_text_gmpo.sh", "--dry-run", LORA_RANK="-2")
    assert bad.returncode == 2 and "model.lora_rank: must be >= 0" in bad.stderr


def test_hostfile_world_size_is_the_sum_of_slots(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# two nodes\nnode-a slots=8\n\nnode-b slots=8\n")
    proc = dry_run("train_text_gmpo.sh", HOSTFILE=str(hostfile))
    assert "launcher deepspeed" in proc.stdout
    assert "world size 16" in summary_line(proc.stdout)


def _echo_launch(tmp_path: Path, **env: str) -> tuple[list[str], Path]:
    """A real-run invocation that stops before starting the launcher (LAUNCH_ECHO=1)."""
    data = tmp_path / "train.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2"}\n')
    out = tmp_path / "run"
    proc = H.run_script(
        "train_text_gmpo.sh", TRAIN_DATA=str(data), OUTPUT_DIR=str(out), LAUNCH_ECHO="1", **env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("# resolved config")
    cmd = shlex.split((out / "launch.txt").read_text().splitlines()[1])
    return cmd, out


def test_real_run_writes_the_resolved_config_to_the_run_directory(tmp_path: Path) -> None:
    from mm_gmpo.train.config import load_config, to_yaml

    _, out = _echo_launch(tmp_path)
    expected = load_config(
        REPO / "configs" / "paper_text_gmpo.yaml",
        [f"data.train={tmp_path / 'train.jsonl'}", f"train.output_dir={out}"],
    )
    assert (out / "config.yaml").read_text() == to_yaml(expected)
    assert "world size 8" in (out / "launch.txt").read_text()


def test_multi_node_launch_commands(tmp_path: Path) -> None:
    cmd, _ = _echo_launch(
        tmp_path, NNODES="2", NPROC_PER_NODE="8", NODE_RANK="1", MASTER_ADDR="node-a", MASTER_PORT="29501"
    )
    joined = " ".join(cmd)
    assert "-m torch.distributed.run --nnodes 2 --nproc_per_node 8 --node_rank 1" in joined
    assert "--master_addr node-a --master_port 29501 -m mm_gmpo train" in joined

    cmd, _ = _echo_launch(tmp_path, NNODES="4", RDZV_ENDPOINT="node-a:29400", RDZV_ID="job7")
    joined = " ".join(cmd)
    assert "--nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint node-a:29400" in joined
    assert "--rdzv_id job7" in joined and "--node_rank" not in joined

    hostfile = tmp_path / "hosts"
    hostfile.write_text("node-a slots=8\nnode-b slots=8\n")
    cmd, out = _echo_launch(tmp_path, HOSTFILE=str(hostfile))
    joined = " ".join(cmd)
    assert "-m deepspeed.launcher.runner" in joined and f"--hostfile {hostfile}" in joined
    assert "--no_local_rank --hostfile" in joined and "--module mm_gmpo train" in joined
    assert "world size 16" in (out / "launch.txt").read_text()


def test_real_run_refuses_a_missing_data_file(tmp_path: Path) -> None:
    proc = H.run_script(
        "train_text_gmpo.sh",
        TRAIN_DATA=str(tmp_path / "missing.jsonl"),
        OUTPUT_DIR=str(tmp_path / "run"),
        LAUNCH_ECHO="1",
    )
    assert proc.returncode == 2 and "missing.jsonl does not exist" in proc.stderr
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ evaluation


def test_eval_math_dry_run_uses_the_paper_protocol(data_root: Path) -> None:
    proc = H.run_script("eval_math.sh", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "eval math --temperature 0 --top-p 1.0 --n 1 --max-new-tokens 3000 --template qwen_math"
        in proc.stdout
    )
    assert "greedy, 1 sample, max 3000 new tokens, qwen_math prompt" in proc.stdout
    assert "| Model | AIME24 | AMC | MATH500 | Minerva | OlympiadBench | Avg. |" in proc.stdout
    assert "# dry run OK" in proc.stdout
    assert H.run_script("eval_math.sh").returncode == 2  # a real run needs CKPT


def test_eval_geometry3k_dry_run_uses_the_vl_protocol(tmp_path: Path) -> None:
    from mm_gmpo.data.record_io import write_records
    from mm_gmpo.data.records import Record

    missing = H.run_script("eval_geometry3k.sh", "--dry-run", DATA_DIR=str(tmp_path / "none"))
    assert missing.returncode == 2 and "geometry3k/test.parquet not found" in missing.stderr

    buf = io.BytesIO()
    Image.new("RGB", (56, 56), "white").save(buf, format="PNG")
    records = [
        Record(
            id=f"geometry3k-{i}",
            problem="<image>Find x.",
            answer=str(3 + i),
            images=[buf.getvalue()],
            source="geometry3k",
            split="test",
        )
        for i in range(2)
    ]
    write_records(tmp_path / "geometry3k" / "test.parquet", records)
    proc = H.run_script("eval_geometry3k.sh", "--dry-run", DATA_DIR=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--temperature 0.5 --top-p 1.0 --n 16 --max-new-tokens 2048 --template geometry" in proc.stdout
    assert "temperature 0.5, top-p 1, 16 samples, max 2048 new tokens, geometry prompt" in proc.stdout
    assert "| dry-run | 100.0 |" in proc.stdout


def test_recipe_yamls_load_on_their_own() -> None:
    """The YAML files are complete recipes without the scripts' overrides too."""
    from mm_gmpo.train.config import load_config

    for name, recipe in (
        ("paper_text_gmpo.yaml", TEXT_RECIPE),
        ("paper_text_r1distill_gmpo.yaml", R1DISTILL_RECIPE),
        ("paper_vl_gmpo_geo3k.yaml", VL_RECIPE),
    ):
        cfg = load_config(REPO / "configs" / name)
        assert_recipe(yaml.safe_load(yaml.safe_dump(cfg.to_dict())), recipe)
