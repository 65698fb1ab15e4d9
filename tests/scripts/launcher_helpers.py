"""Running the shell launchers from tests: a clean environment and YAML read-back.

Loaded by path from the test modules (pytest runs with --import-mode=importlib).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"

# Variables the launchers (or torchrun) read: a test sets what it needs, nothing leaks in.
LAUNCH_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "LAUNCHER",
    "NPROC_PER_NODE",
    "GPUS",
    "NNODES",
    "NODE_RANK",
    "RDZV_ENDPOINT",
    "RDZV_ID",
    "HOSTFILE",
    "EXTRA_ARGS",
    "DRY_RUN",
    "DRY_RUN_LIMIT",
    "LAUNCH_ECHO",
    "RECIPE",
    "MODEL",
    "LOSS",
    "CLIP_LOW",
    "CLIP_HIGH",
    "TRAIN_DATA",
    "GEO3K_TRAIN",
    "OUTPUT_DIR",
    "STEPS",
    "SEED",
    "ZERO_STAGE",
    "OFFLOAD",
    "CONFIG",
    "CKPT",
    "OUT",
    "LABEL",
    "DATA_DIR",
    "GPU_MEM",
)


def script_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["PYTHON"] = sys.executable
    env.update(overrides)
    return env


def run_script(
    name: str, *args: str, timeout: float = 600, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPTS / name), *args],
        cwd=cwd or REPO,
        env=script_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def resolved_config(stdout: str) -> dict[str, Any]:
    """The YAML a training launcher printed (its comment lines are YAML comments)."""
    start = stdout.index("# resolved config")
    end = stdout.index("# dry run OK", start)
    return yaml.safe_load(stdout[start:end])
