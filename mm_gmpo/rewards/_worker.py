"""Code that runs inside a scorer worker process.

A worker reads ``(task_id, kind, payload)`` messages from its pipe, computes
``(accuracy, format)`` and writes back ``(task_id, status, accuracy, format)``. It puts an
address-space limit on itself and a cooperative timer (SIGALRM) on each task; the timer only
saves a process restart for slow pure-Python work, the hard limit is the parent killing
the process. Model text is only ever treated as data here: nothing is passed to eval/exec.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from collections.abc import Callable
from typing import Any

from mm_gmpo.rewards.format import format_reward
from mm_gmpo.rewards.geometry import geometry_accuracy
from mm_gmpo.rewards.math_verifier import math_accuracy

OK, TIMEOUT, ERROR = "ok", "timeout", "error"

Payload = tuple[str, Any, Any, bool]  # response, answer, choices, truncated


class _SoftTimeout(BaseException):
    """Raised by the SIGALRM handler; a BaseException so that `except Exception` in
    libraries (math-verify catches broadly) cannot swallow it."""


def _math(p: Payload) -> tuple[float, float]:
    response, answer, _choices, truncated = p
    return math_accuracy(response, answer, truncated), format_reward(response)


def _geometry(p: Payload) -> tuple[float, float]:
    response, answer, choices, truncated = p
    return geometry_accuracy(response, answer, choices, truncated), format_reward(response)


def _debug_spin_blocked(p: Payload) -> tuple[float, float]:
    # Test hook: a task that ignores the cooperative timer (like C code holding the GIL),
    # so only the parent's kill can end it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    end = time.monotonic() + float(p[0])
    while time.monotonic() < end:
        pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
    return 1.0, 1.0


def _debug_spin(p: Payload) -> tuple[float, float]:
    # Test hook: slow pure-Python work that the cooperative timer can interrupt.
    end = time.monotonic() + float(p[0])
    while time.monotonic() < end:
        pass
    return 1.0, 1.0


def _debug_alloc(p: Payload) -> tuple[float, float]:
    # Test hook: tries to allocate p[0] megabytes.
    block = bytearray(int(p[0]) * 1024 * 1024)
    return float(len(block) > 0), 0.0


def _debug_exit(p: Payload) -> tuple[float, float]:
    # Test hook: the process dies without answering (as after a segfault).
    os._exit(3)


def _debug_pid(p: Payload) -> tuple[float, float]:
    # Test hook: reports the worker's pid through the accuracy slot.
    return float(os.getpid()), 0.0


TASKS: dict[str, Callable[[Payload], tuple[float, float]]] = {
    "math": _math,
    "geometry": _geometry,
    "_debug_spin_blocked": _debug_spin_blocked,
    "_debug_spin": _debug_spin,
    "_debug_alloc": _debug_alloc,
    "_debug_exit": _debug_exit,
    "_debug_pid": _debug_pid,
}


def _on_alarm(signum: int, frame: Any) -> None:
    raise _SoftTimeout()


def warm_up() -> None:
    """Import and exercise the verifiers once so that forked workers start hot."""
    math_accuracy("\\boxed{\\frac{1}{2}}", "0.5")
    math_accuracy("\\boxed{x^2+1}", "1+x^2")
    geometry_accuracy("\\boxed{2\\sqrt{3}}", "3.46")


def worker_main(conn: Any, soft_timeout_s: float, memory_limit_bytes: int | None) -> None:
    """Serve tasks until the parent closes the pipe or sends None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    signal.signal(signal.SIGALRM, _on_alarm)
    if memory_limit_bytes:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
        except (ValueError, OSError):
            pass  # the limit is below what is already mapped; keep running unlimited
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        task_id, kind, payload = msg
        status, acc, fmt = ERROR, 0.0, 0.0
        try:
            try:
                if soft_timeout_s > 0:
                    signal.setitimer(signal.ITIMER_REAL, soft_timeout_s)
                acc, fmt = TASKS[kind](payload)
                status = OK
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _SoftTimeout:
            status, acc, fmt = TIMEOUT, 0.0, 0.0
        except BaseException:  # noqa: BLE001 - any failure of a verifier scores 0
            status, acc, fmt = ERROR, 0.0, 0.0
        try:
            conn.send((task_id, status, float(acc), float(fmt)))
        except (OSError, ValueError):
            return
