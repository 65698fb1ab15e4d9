"""Process groups for tests: one rank in the test process, or two CPU ranks under torchrun.

DeepSpeed needs a process group even on one rank; a launcher's environment variables left
from elsewhere would make the group wait for ranks that never come, so they are set aside
while the group lives and put back afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# What torchrun and the DeepSpeed launcher set for every rank.
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@contextmanager
def single_rank_group() -> Iterator[None]:
    """Within: a world-size-1 gloo group, with no launcher variables in the environment."""
    from mm_gmpo.train import dist

    saved = {key: os.environ.pop(key) for key in DIST_ENV if key in os.environ}
    dist.init_distributed()
    try:
        assert dist.world_size() == 1
        yield
    finally:
        dist.shutdown()
        for key in DIST_ENV:
            os.environ.pop(key, None)
        os.environ.update(saved)


def run_two_ranks(script: Path, args: list[str], timeout_s: float, hang_hint: str = "") -> tuple[int, str]:
    """Run ``script args`` on two CPU ranks under torchrun; return (exit code, combined log).

    The launcher variables of the calling process are dropped (torchrun sets its own) and the
    repository goes first on PYTHONPATH so the workers import this checkout. The run gets its
    own session, so a hang (the usual symptom of ranks disagreeing on a collective) kills
    torchrun and both workers and raises ``TimeoutError`` with the log's tail.
    """
    from mm_gmpo.train.dist import free_port

    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), *args]
    proc = subprocess.Popen(
        cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        log, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers share this session
        log, _ = proc.communicate()
        raise TimeoutError(
            f"two-rank worker timed out{hang_hint}:\n" + log.decode(errors="replace")[-4000:]
        ) from None
    return proc.returncode, log.decode(errors="replace")
