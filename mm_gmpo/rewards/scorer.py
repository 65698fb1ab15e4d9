"""Batch reward scoring in worker processes, each verification under a hard time limit.

Design
------
* ``HardLimitPool`` keeps ``num_workers`` persistent processes, each with its own pipe. The
  parent hands one task at a time to an idle worker and records a deadline. If the answer is
  not back by the deadline the worker is killed (SIGKILL) and replaced; the task scores 0
  and is counted as a time-out. Killing is the guarantee: it also ends C code that holds the
  GIL (sympy building a 10^9-digit integer, a regex backtracking), which no in-process
  timeout can interrupt. Inside each worker a SIGALRM timer at a fraction of the limit
  interrupts slow pure-Python work first, which also counts as a time-out but saves the
  restart.
* Workers limit their own address space (``RLIMIT_AS``); a ``MemoryError`` or a crashed
  worker scores 0 and is counted as an error.
* Start method: ``forkserver``, deliberately. The trainer process holds CUDA contexts,
  NCCL/DeepSpeed threads and gigabytes of mappings: ``fork`` from it is unsafe (locks held by
  other threads, CUDA is not fork-safe) and would make an address-space limit meaningless.
  ``spawn`` is clean but re-imports sympy/math-verify (~1 s) for every replacement of a
  killed worker. The forkserver is a small clean process that preloads and warms the
  verifiers once (``_preload``); each worker is then a cheap fork of it.
  Note: the forkserver is one per interpreter; if something else started it first, workers
  still work and import the verifiers on first use.
* Workers are reused across ``score`` calls (one per training step); ``close`` (also via a
  context manager, ``atexit`` and garbage collection) stops them. Workers are daemonic and
  exit by themselves when the parent's pipe closes, so nothing is left behind.
"""

from __future__ import annotations

import atexit
import io
import os
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing import popen_forkserver
from multiprocessing.connection import wait
from multiprocessing.context import ForkServerContext, ForkServerProcess
from typing import Any

from mm_gmpo.rewards._worker import ERROR, OK, TASKS, TIMEOUT, worker_main
from mm_gmpo.rewards.format import RewardWeights, combined_reward

_PRELOAD = ["mm_gmpo.rewards._preload"]
# The cooperative timer fires at this fraction of the hard limit.
_SOFT_FRACTION = 0.75

_LIVE_POOLS: weakref.WeakSet[HardLimitPool] = weakref.WeakSet()


def _close_live_pools() -> None:
    for pool in list(_LIVE_POOLS):
        pool.close()


atexit.register(_close_live_pools)


def _launch_without_main(popen: Any, process_obj: Any) -> None:
    """Start ``process_obj`` through the forkserver without re-running ``__main__`` in it.

    The stock forkserver launch asks the child to re-import the parent's main module (as
    ``spawn`` does). For a worker whose target lives in this package that is pure cost, and
    harmful: a training script's top-level imports (torch, CUDA libraries) would be loaded
    in every worker, blow through its address-space limit, and an unguarded script would
    even recurse. Everything else about the launch is the standard one.
    """
    from multiprocessing import forkserver, reduction, spawn
    from multiprocessing.context import set_spawning_popen
    from multiprocessing.util import Finalize, close_fds

    prep = spawn.get_preparation_data(process_obj._name)
    prep.pop("init_main_from_path", None)
    prep.pop("init_main_from_name", None)
    buf = io.BytesIO()
    set_spawning_popen(popen)
    try:
        reduction.dump(prep, buf)
        reduction.dump(process_obj, buf)
    finally:
        set_spawning_popen(None)
    popen.sentinel, w = forkserver.connect_to_new_process(popen._fds)
    parent_w = os.dup(w)  # lets the child notice when the parent goes away
    popen.finalizer = Finalize(popen, close_fds, (parent_w, popen.sentinel))
    with open(w, "wb", closefd=True) as f:
        f.write(buf.getbuffer())
    popen.pid = forkserver.read_signed(popen.sentinel)


class _Popen(popen_forkserver.Popen):
    def _launch(self, process_obj: Any) -> None:
        _launch_without_main(self, process_obj)


class _Process(ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _Popen(process_obj)


class _Context(ForkServerContext):
    Process = _Process


def _context() -> Any:
    ctx = _Context()
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


class _Worker:
    """One worker process, its pipe and the task it is busy with."""

    def __init__(self, ctx: Any, soft_timeout_s: float, memory_limit_bytes: int | None):
        parent_end, child_end = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(
            target=worker_main,
            args=(child_end, soft_timeout_s, memory_limit_bytes),
            daemon=True,
            name="mm-gmpo-reward-worker",
        )
        self.proc.start()
        child_end.close()  # so that the parent sees EOF when the worker dies
        self.conn = parent_end
        self.task: int | None = None
        self.deadline = 0.0

    def stop(self, graceful: bool) -> None:
        if graceful and self.proc.is_alive():
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
            self.proc.join(timeout=1.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5.0)
        self.conn.close()


@dataclass
class PoolStats:
    """Counters over the life of a pool."""

    tasks: int = 0
    timeouts: int = 0
    errors: int = 0
    restarts: int = 0


class HardLimitPool:
    """Persistent worker processes that run named tasks (see ``_worker.TASKS``) with a hard
    per-task time limit enforced by killing the worker.

    Why: a verifier call on model output can hang or eat memory; the training step must go
    on with a 0 reward for that answer, and the pool must stay usable.
    """

    def __init__(self, num_workers: int = 2, timeout_s: float = 4.0, memory_limit_mb: int | None = 2048):
        if num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.num_workers = num_workers
        self.timeout_s = float(timeout_s)
        self.memory_limit_bytes = memory_limit_mb * 1024 * 1024 if memory_limit_mb else None
        self.stats = PoolStats()
        self._ctx = _context()
        self._workers: list[_Worker] = []
        self._closed = False
        _LIVE_POOLS.add(self)

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self.timeout_s * _SOFT_FRACTION, self.memory_limit_bytes)

    def start(self) -> None:
        """Start the workers now (otherwise the first ``run`` does)."""
        if self._closed:
            raise RuntimeError("pool is closed")
        while len(self._workers) < self.num_workers:
            self._workers.append(self._spawn())

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for monitoring and tests)."""
        return [w.proc.pid for w in self._workers if w.proc.pid is not None]

    def _replace(self, w: _Worker) -> None:
        w.stop(graceful=False)
        self._workers[self._workers.index(w)] = self._spawn()
        self.stats.restarts += 1

    def run(self, kind: str, payloads: Sequence[Any]) -> list[tuple[str, float, float]]:
        """Run task ``kind`` on every payload; return ``(status, accuracy, format)`` per item,
        in order. ``status`` is "ok", "timeout" or "error"; non-ok items score 0."""
        if kind not in TASKS:
            raise ValueError(f"unknown task kind {kind!r}; known: {sorted(TASKS)}")
        self.start()
        n = len(payloads)
        results: list[tuple[str, float, float] | None] = [None] * n
        pending = list(range(n - 1, -1, -1))  # a stack; popped from the end = in order
        remaining = n

        def finish(i: int, status: str, acc: float, fmt: float) -> None:
            nonlocal remaining
            results[i] = (status, acc, fmt)
            remaining -= 1
            if status == TIMEOUT:
                self.stats.timeouts += 1
            elif status == ERROR:
                self.stats.errors += 1

        while remaining:
            for w in list(self._workers):
                if w.task is None and pending:
                    i = pending.pop()
                    try:
                        w.conn.send((i, kind, payloads[i]))
                    except (OSError, ValueError):
                        pending.append(i)  # the worker died while idle: retry on a new one
                        self._replace(w)
                        continue
                    w.task = i
                    w.deadline = time.monotonic() + self.timeout_s
            busy = [w for w in self._workers if w.task is not None]
            if not busy:
                continue
            wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = set(wait([w.conn for w in busy], timeout=wait_s))
            for w in busy:
                if w.conn not in ready:
                    continue
                try:
                    task_id, status, acc, fmt = w.conn.recv()
                except (EOFError, OSError, ValueError):
                    i = w.task
                    w.task = None
                    finish(i, ERROR, 0.0, 0.0)  # the worker died (memory, crash)
                    self._replace(w)
                    continue
                if task_id != w.task:  # cannot happen with one task in flight; be strict
                    raise RuntimeError("worker answered the wrong task")
                w.task = None
                if status == OK:
                    finish(task_id, OK, acc, fmt)
                else:
                    finish(task_id, status, 0.0, 0.0)
            now = time.monotonic()
            for w in list(self._workers):
                if w.task is not None and now >= w.deadline:
                    i = w.task
                    w.task = None
                    finish(i, TIMEOUT, 0.0, 0.0)
                    self._replace(w)
        self.stats.tasks += n
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Stop all workers; idempotent."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            w.stop(graceful=w.task is None)
        self._workers = []
        _LIVE_POOLS.discard(self)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


@dataclass
class ScoreResult:
    """Per-item rewards of one ``RewardScorer.score`` call, plus counters.

    ``rewards[i] = w_acc * accuracy[i] + w_fmt * format[i]``; items that timed out or
    errored have all three at 0.
    """

    rewards: list[float]
    accuracy: list[float]
    format: list[float]
    timed_out: list[bool]
    errored: list[bool]
    seconds: float
    num_timeouts: int = field(init=False)
    num_errors: int = field(init=False)

    def __post_init__(self) -> None:
        self.num_timeouts = sum(self.timed_out)
        self.num_errors = sum(self.errored)

    def metrics(self, prefix: str = "reward/") -> dict[str, float]:
        """Means and counters for the training log."""
        n = max(len(self.rewards), 1)
        return {
            f"{prefix}mean": sum(self.rewards) / n,
            f"{prefix}accuracy": sum(self.accuracy) / n,
            f"{prefix}format": sum(self.format) / n,
            f"{prefix}timeouts": float(self.num_timeouts),
            f"{prefix}errors": float(self.num_errors),
            f"{prefix}seconds": self.seconds,
        }


_DEFAULT_WEIGHTS = {
    "math": RewardWeights(accuracy=1.0, format=0.0),
    "geometry": RewardWeights(accuracy=0.9, format=0.1),
}


def _answer_and_choices(record: Any) -> tuple[Any, list[str] | None]:
    if isinstance(record, Mapping):
        answer, choices = record.get("answer"), record.get("choices")
    else:
        answer, choices = getattr(record, "answer", None), getattr(record, "choices", None)
    if answer is None:
        raise ValueError("record has no answer")
    return answer, (list(choices) if choices else None)


class RewardScorer:
    """Scores responses against records with hard time limits.

    ``kind="math"``: text path, reward = accuracy (1/0, truncated -> 0).
    ``kind="geometry"``: VL path, reward = 0.9 * accuracy + 0.1 * format (``weights``).
    Records are ``mm_gmpo.data.records.Record`` objects or mappings with ``answer`` and
    optionally ``choices``; only those two fields travel to the workers.

    Why: the one reward entry point of the training loop and eval: it cannot hang, crash
    or leak, whatever the model writes.
    """

    def __init__(
        self,
        kind: str = "math",
        timeout_s: float = 4.0,
        num_workers: int = 2,
        memory_limit_mb: int | None = 2048,
        weights: RewardWeights | None = None,
    ):
        if kind not in TASKS:
            raise ValueError(f"unknown reward kind {kind!r}")
        self.kind = kind
        self.weights = weights or _DEFAULT_WEIGHTS.get(kind, RewardWeights(1.0, 0.0))
        self.pool = HardLimitPool(
            num_workers=num_workers, timeout_s=timeout_s, memory_limit_mb=memory_limit_mb
        )

    def score(
        self,
        responses: Sequence[str],
        records: Sequence[Any],
        truncated: Sequence[bool] | None = None,
    ) -> ScoreResult:
        """Score ``responses[i]`` against ``records[i]``; ``truncated[i]`` marks a response
        cut at the length limit (no end-of-sequence), which gets accuracy 0."""
        if len(responses) != len(records):
            raise ValueError("responses and records differ in length")
        if truncated is None:
            truncated = [False] * len(responses)
        elif len(truncated) != len(responses):
            raise ValueError("truncated and responses differ in length")
        payloads = []
        for resp, rec, trunc in zip(responses, records, truncated):
            answer, choices = _answer_and_choices(rec)
            payloads.append((resp if isinstance(resp, str) else "", answer, choices, bool(trunc)))
        t0 = time.perf_counter()
        out = self.pool.run(self.kind, payloads)
        seconds = time.perf_counter() - t0
        acc = [a for _, a, _ in out]
        fmt = [f for _, _, f in out]
        return ScoreResult(
            rewards=[combined_reward(a, f, self.weights) for a, f in zip(acc, fmt)],
            accuracy=acc,
            format=fmt,
            timed_out=[s == TIMEOUT for s, _, _ in out],
            errored=[s == ERROR for s, _, _ in out],
            seconds=seconds,
        )

    def close(self) -> None:
        """Stop the worker processes."""
        self.pool.close()

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
