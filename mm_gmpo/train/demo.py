"""``mm-gmpo demo``: the CPU demos (text, vision-language), one run per seed, then one summary.

The summary is the demo's whole answer on one screen, printed after every run has finished
so it is not lost among the runs' progress lines: per path and seed, held-out accuracy before
and after GMPO, the time, and where the runs and their plots are.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

# The shipped config of each demo path.
PATH_CONFIGS = {"text": "demo_text.yaml", "vl": "demo_vl.yaml"}

# One x86 instruction set for every CPU kernel library torch calls: ATen's own kernels, MKL's
# BLAS (conditional numerical reproducibility) and oneDNN. Each otherwise picks the widest
# vectors the CPU has, and AVX-512 sums floats in another order than AVX2: the same seed then
# warm-starts to other weights on another CPU model (measured: text seed 1 starts at 0.380
# held-out with AVX-512 kernels, 0.400 with AVX2). Nearly every x86 CPU in use has AVX2.
DEMO_CPU_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pin_cpu_numerics() -> dict[str, str]:
    """Set :data:`DEMO_CPU_NUMERICS` (x86 only) and one torch thread (unless ``OMP_NUM_THREADS``
    says otherwise) before torch runs its first kernel; returns what was set.

    Called by ``mm-gmpo demo`` first thing: the libraries read these once, at first use. One
    thread because the tiny models' tensors are too small to split: on two cores a second
    torch thread only competes with the reward workers (the text demo's build took 45 s with
    one thread and more than 150 s with two, side by side on a loaded machine).
    """
    pinned = {"OMP_NUM_THREADS": os.environ.setdefault("OMP_NUM_THREADS", "1")}
    if platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.update(DEMO_CPU_NUMERICS)
        pinned.update(DEMO_CPU_NUMERICS)
    return pinned


@dataclass(frozen=True)
class DemoResult:
    """One finished demo run."""

    path: str  # "text" / "vl" (or the modality of a --config)
    seed: int
    before: float  # greedy held-out accuracy before RL
    after: float  # ... and after
    wall_s: float
    output_dir: str
    plot: str
    eval_prompts: int

    @property
    def gain_points(self) -> float:
        return 100 * (self.after - self.before)


def demo_runs(
    paths: list[str], config: str | None, output_dir: str | None
) -> list[tuple[str, Path | str, str | None]]:
    """(label, config file, output root or None for the config's own) for each path to run."""
    from mm_gmpo.resources import config_path, resolve_config

    if config is not None:
        return [("", resolve_config(config), output_dir)]
    if len(paths) == 1 or output_dir is None:
        return [(p, config_path(PATH_CONFIGS[p]), output_dir) for p in paths]
    return [(p, config_path(PATH_CONFIGS[p]), f"{output_dir}/{p}") for p in paths]


def run_demo(
    paths: list[str],
    seeds: list[int],
    *,
    config: str | None = None,
    output_dir: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> list[DemoResult]:
    """Every path for every seed (path by path), a fresh run each; one line per finished run."""
    from mm_gmpo.train.config import load_config
    from mm_gmpo.train.run import train

    results = []
    for label, config_file, root in demo_runs(paths, config, output_dir):
        for seed in seeds:
            base = load_config(config_file, list(overrides))
            out = f"{root or base.train.output_dir}/seed{seed}"
            cfg = load_config(
                config_file,
                [f"train.seed={seed}", f"train.output_dir={out}", "train.resume=never", *overrides],
            )
            t0 = time.perf_counter()
            summary = train(cfg)
            result = DemoResult(
                path=label or cfg.modality,
                seed=seed,
                before=summary["eval_accuracy_before"],
                after=summary["eval_accuracy_after"],
                wall_s=time.perf_counter() - t0,
                output_dir=out,
                plot=summary.get("plot", ""),
                eval_prompts=cfg.data.eval_limit or cfg.data.synthetic_eval_size,
            )
            results.append(result)
            print(
                f"[demo] {result.path} seed {seed}: held-out accuracy {result.before:.3f} -> "
                f"{result.after:.3f} in {result.wall_s:.0f} s  (plot: {result.plot})",
                flush=True,
            )
    return results


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def render_summary(results: list[DemoResult], total_s: float) -> str:
    """The closing screen: a row per run, the mean gain per path, where runs and plots are."""
    prompts = sorted({r.eval_prompts for r in results})
    lines = [
        "",
        f"== mm-gmpo demo: greedy held-out accuracy on {'/'.join(map(str, prompts))} unseen prompts, "
        "before -> after GMPO ==",
        f"{'path':<5} {'seed':>4}  {'before':>6}    {'after':>6}  {'gain':>6}  {'time':>11}  run directory",
    ]
    for r in results:
        lines.append(
            f"{r.path:<5} {r.seed:>4}  {r.before:>6.3f} -> {r.after:>6.3f}  {r.gain_points:>+6.1f}  "
            f"{_duration(r.wall_s):>11}  {r.output_dir}"
        )
    by_path: dict[str, list[DemoResult]] = {}
    for r in results:
        by_path.setdefault(r.path, []).append(r)
    means = [
        f"{path} {sum(r.gain_points for r in rs) / len(rs):+.1f} points ({len(rs)} seed{'s' * (len(rs) > 1)})"
        for path, rs in by_path.items()
    ]
    lines.append(f"mean gain: {', '.join(means)}; total {_duration(total_s)}")
    roots = sorted({str(Path(r.output_dir).parent) for r in results})
    lines.append(
        "plots: " + ", ".join(f"{root}/seed*/training.png" for root in roots) + "; beside each: "
        "metrics.jsonl, config.yaml, summary.json, checkpoints/, tensorboard/"
    )
    return "\n".join(lines)
