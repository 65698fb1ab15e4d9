"""Shared timing helpers for bench/: warm-up, repeats, medians, peak memory, rows, machine facts.

Every benchmark writes one *row* (a JSON file ``row<N>.json`` under an output folder) and
``run_all.py`` renders the rows into ``bench/RESULTS.md``. A row holds the figure, its baseline
measured in the same run, the ratio, the conditions, and the raw repeats, so nothing in the
table is typed by hand.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_OUT = BENCH_DIR / "results"

# Intra-op threads for every benchmark process (and the subprocesses it starts). One thread by
# default: on a machine whose cores are shared with other jobs, two OpenMP threads that wait on
# each other at every barrier made a tiny-model forward+backward ~25x slower than one thread
# (measured here: 3.3 s vs 0.12 s median). Both sides of every comparison get the same value.
THREADS = int(os.environ.get("MM_GMPO_BENCH_THREADS", "1"))


def pin_threads(threads: int = THREADS) -> int:
    """Set the thread count for this process and, through the environment, for its children."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["MM_GMPO_BENCH_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads


pin_threads()


# ---------------------------------------------------------------- timing
def timed_runs(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def spread(xs: Sequence[float]) -> str:
    """``min-max`` of the repeats, for the table's noise column."""
    return f"{min(xs):.3g}-{max(xs):.3g}" if xs else ""


# ---------------------------------------------------------------- subprocesses and memory
@dataclass
class ProcResult:
    returncode: int
    wall_s: float
    peak_rss_mb: float  # largest single process of the tree (wait4's ru_maxrss)
    peak_tree_rss_mb: float  # the whole process tree, sampled every 0.2 s (psutil; 0 without it)
    stdout: str
    stderr: str


def _tree_rss_bytes(pid: int) -> int:
    try:
        import psutil
    except ImportError:
        return 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(
    cmd: Sequence[str],
    *,
    cwd: Path | str = REPO,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> ProcResult:
    """Run ``cmd``; wall time, peak RSS of its largest process (wait4) and of its whole tree."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak_tree = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not stop.is_set():
            peak_tree = max(peak_tree, _tree_rss_bytes(proc.pid))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),
        threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True),
    ]
    for r in readers:
        r.start()
    deadline = None if timeout is None else t0 + timeout
    status = None
    while status is None:
        pid, st, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            status = (st, usage)
            break
        if deadline is not None and time.perf_counter() > deadline:
            proc.kill()
            _, st, usage = os.wait4(proc.pid, 0)
            status = (st, usage)
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status[0])
    stop.set()
    sampler.join()
    for r in readers:
        r.join()
    return ProcResult(
        returncode=proc.returncode,
        wall_s=wall,
        peak_rss_mb=status[1].ru_maxrss / 1024.0,  # Linux: kilobytes
        peak_tree_rss_mb=peak_tree / 2**20,
        stdout="".join(out),
        stderr="".join(err),
    )


def last_json_line(text: str) -> dict[str, Any]:
    """The last line of ``text`` that parses as a JSON object (benchmarks print their result so)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError(f"no JSON line in output:\n{text[-2000:]}")


def venv_python(name: str) -> Path | None:
    """``<repo>/<name>/bin/python`` when that environment exists."""
    py = REPO / name / "bin" / "python"
    return py if py.exists() else None


# ---------------------------------------------------------------- rows
@dataclass
class Row:
    """One line of the results table."""

    row: int
    name: str
    figure: str  # what the number measures, with its unit
    value: float | None  # mm-gmpo's figure (median)
    baseline_name: str = ""
    baseline_value: float | None = None
    ratio: float | None = None  # value / baseline_value, as defined by ``ratio_note``
    ratio_note: str = ""
    target: str = ""
    met: bool | None = None
    status: str = "measured"  # measured | dry-run | not measured | failed
    conditions: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def write_row(row: Row, out_dir: Path | str = DEFAULT_OUT) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"row{row.row}.json"
    data = asdict(row)
    data["machine"] = machine_info()
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def read_rows(out_dir: Path | str = DEFAULT_OUT) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("row*.json"))]


# ---------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:
        return "absent"


def machine_info() -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu_model(),
        "cores_available": cores,
        "mem_total_gb": _mem_total_gb(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "executable": sys.executable,
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "bench_threads": THREADS,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        pass
    return info
