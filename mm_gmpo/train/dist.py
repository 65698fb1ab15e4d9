"""Thin helpers over ``torch.distributed`` for the training loop.

The loop shards prompts by :func:`rank` / :func:`world_size` and sums loss-unit counts across
ranks with :func:`all_reduce_sum`, so every rank divides its micro-batch losses by the same
global count. Every helper also works when no process group exists (one process, no
launcher): rank 0 of 1, sums return their input, barriers do nothing. That keeps the
single-process CPU path free of launcher set-up while the torchrun path stays the same code.
"""

from __future__ import annotations

import os
import socket
import sys

import torch
import torch.distributed as torch_dist

_ENV_DEFAULTS_SINGLE = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0 and let the OS choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_backend() -> str:
    """``nccl`` when CUDA is usable, else ``gloo`` (the only CPU backend DeepSpeed runs on here)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(backend: str | None = None) -> None:
    """Create the default process group once; later calls are no-ops.

    Reads torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``.
    When they are absent (a plain ``python`` run) it fills single-process defaults with a free
    port, because DeepSpeed otherwise falls back to MPI discovery and fails without mpi4py.
    On CUDA it also pins this process to its local GPU before NCCL sees it.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        return
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        for key, value in _ENV_DEFAULTS_SINGLE.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        raise RuntimeError("WORLD_SIZE/RANK are set but MASTER_PORT is not; launch with torchrun")
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch_dist.init_process_group(backend=backend)


def is_initialized() -> bool:
    """True once a default process group exists."""
    return torch_dist.is_available() and torch_dist.is_initialized()


def rank() -> int:
    """Global rank, 0 without a process group."""
    return torch_dist.get_rank() if is_initialized() else 0


def local_rank() -> int:
    """Rank on this node (the GPU index), from torchrun's ``LOCAL_RANK``; 0 by default."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """Number of ranks, 1 without a process group."""
    return torch_dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Whether this rank writes logs, checkpoints and metrics."""
    return rank() == 0


def _comm_device() -> torch.device:
    """Where a tensor must live for the current backend (NCCL only moves CUDA tensors)."""
    if is_initialized() and torch_dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(value: float | torch.Tensor) -> float | torch.Tensor:
    """Sum ``value`` over all ranks; returns the same kind it was given.

    A float is summed in float64 so unit counts stay exact; a tensor is summed out of place
    (on the backend's device, then moved back) so the caller's tensor is left untouched.
    """
    if isinstance(value, torch.Tensor):
        if world_size() == 1:
            return value.clone()
        buf = value.detach().to(_comm_device(), copy=True)
        torch_dist.all_reduce(buf, op=torch_dist.ReduceOp.SUM)
        return buf.to(value.device)
    if world_size() == 1:
        return float(value)
    buf = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    torch_dist.all_reduce(buf, op=torch_dist.ReduceOp.SUM)
    return float(buf.item())


def all_reduce_max(value: int) -> int:
    """The largest ``value`` over all ranks (an int, e.g. a count every rank must agree on)."""
    if world_size() == 1:
        return int(value)
    buf = torch.tensor([int(value)], dtype=torch.int64, device=_comm_device())
    torch_dist.all_reduce(buf, op=torch_dist.ReduceOp.MAX)
    return int(buf.item())


def all_gather_object(obj: object) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` without a process group.

    For small reports that every rank must act on alike (stop together, raise the same error),
    so no rank is left waiting in a collective the others never reach.
    """
    if world_size() == 1:
        return [obj]
    out: list = [None] * world_size()
    torch_dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank; a no-op without a process group."""
    if world_size() > 1:
        torch_dist.barrier()


def shutdown() -> None:
    """Barrier, then destroy the process group; safe to call when none exists.

    DeepSpeed keeps a clone of the world group (``deepspeed.utils.groups._WORLD_GROUP``) that
    dies with the group; it is forgotten here, or the next engine built in this process (the
    next seed of ``mm-gmpo demo`` under DeepSpeed, the next test) fails with "Group ... is not
    registered".
    """
    if not is_initialized():
        return
    barrier()
    torch_dist.destroy_process_group()
    ds_groups = sys.modules.get("deepspeed.utils.groups")
    if ds_groups is not None:
        ds_groups._WORLD_GROUP = None
