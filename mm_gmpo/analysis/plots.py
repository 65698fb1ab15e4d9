"""Figures that overlay several runs, read from each run's ``metrics.jsonl`` and ``config.yaml``.

One colour per run family (the label without its seed: "gmpo", "grpo", ...), one line style per
seed within a family, so a 2-loss x 3-seed study reads as two colours. The log-ratio figure is
the paper's Figure 1 in spirit: a min..max band of log(π_θ/π_old) per step for each run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mm_gmpo.train.logging import read_metrics

LINESTYLES = ("-", "--", ":", "-.")


@dataclass
class RunData:
    """One run's metric rows, split into RL steps and held-out evaluations."""

    run_dir: Path
    label: str
    family: str
    train: list[dict[str, Any]] = field(default_factory=list)  # rows with reward_mean
    evals: list[dict[str, Any]] = field(default_factory=list)  # rows with eval_accuracy
    config: dict[str, Any] = field(default_factory=dict)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of ``key`` over the RL steps that logged it; non-finite kept as nan."""
        steps, values = [], []
        for row in self.train:
            if key in row:
                steps.append(int(row["step"]))
                values.append(as_float(row[key]))
        return steps, values


def as_float(value: Any) -> float:
    """Metric values are floats, or strings ("nan", "inf") where the logger met a non-finite one."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def run_family(config: dict[str, Any]) -> str:
    """What the run is, without its seed: the loss name, prefixed by the path when it is VL.

    A clip set in the config is part of the name (``gmpo@0.2231/0.1823``, as the study writes
    its arms), so runs of one loss at two trust regions get their own colour and panel.
    """
    section = config.get("loss") or {}
    loss = section.get("name")
    if loss is None:
        return ""
    low, high = section.get("clip_low"), section.get("clip_high")
    if low is not None or high is not None:
        from mm_gmpo.objective import get_loss

        spec = get_loss(loss)
        low = spec.clip_low if low is None else low
        high = spec.clip_high if high is None else high
        loss = f"{loss}@{low:g}" if low == high else f"{loss}@{low:g}/{high:g}"
    modality = config.get("modality", config.get("path", "text"))  # "path": runs before the rename
    return loss if modality == "text" else f"{modality} {loss}"


def run_label(run_dir: str | Path, config: dict[str, Any] | None = None) -> str:
    """A legend entry named by the run's config ("gmpo seed0"), or the folder name without one."""
    config = read_config(run_dir) if config is None else config
    family = run_family(config)
    if not family:
        return Path(run_dir).name
    seed = (config.get("train") or {}).get("seed")
    return family if seed is None else f"{family} seed{seed}"


def load_runs(run_dirs: list[str | Path], labels: list[str] | None = None) -> list[RunData]:
    """Read each run; labels default to :func:`run_label`, made unique with the folder name."""
    runs = []
    for i, d in enumerate(run_dirs):
        d = Path(d)
        if not (d / "metrics.jsonl").is_file():
            raise FileNotFoundError(f"{d} has no metrics.jsonl (is it a run's output_dir?)")
        config = read_config(d)
        rows = read_metrics(d)
        label = labels[i] if labels else run_label(d, config)
        runs.append(
            RunData(
                run_dir=d,
                label=label,
                family=run_family(config) or label,
                train=[r for r in rows if "reward_mean" in r],
                evals=[r for r in rows if "eval_accuracy" in r],
                config=config,
            )
        )
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.label] = seen.get(r.label, 0) + 1
    for r in runs:
        if seen[r.label] > 1:
            r.label = f"{r.label} ({r.run_dir.parent.name}/{r.run_dir.name})"
    return runs


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average over finite values (window 1: unchanged)."""
    if window <= 1:
        return values
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - window + 1) : i + 1] if math.isfinite(v)]
        out.append(sum(part) / len(part) if part else math.nan)
    return out


def _styles(runs: list[RunData]) -> list[dict[str, Any]]:
    """Colour per family (in order of appearance), line style per run within its family."""
    import matplotlib.pyplot as plt

    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    families: dict[str, int] = {}
    within: dict[str, int] = {}
    styles = []
    for r in runs:
        fam = families.setdefault(r.family, len(families))
        k = within.get(r.family, 0)
        within[r.family] = k + 1
        styles.append({"color": palette[fam % len(palette)], "linestyle": LINESTYLES[k % len(LINESTYLES)]})
    return styles


def _line(ax, run: RunData, style: dict[str, Any], key: str, window: int, label: str | None) -> bool:
    steps, values = run.series(key)
    if not steps:
        return False
    ax.plot(steps, smooth(values, window), label=label, linewidth=1.2, **style)
    return True


def _finish(fig, axes, runs, styles, out: Path, title: str) -> Path:
    """One legend for the figure (every run, by config name), then save."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], label=r.label, **s) for r, s in zip(runs, styles)]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(len(runs), 6),
        fontsize="small",
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )
    fig.suptitle(title)
    rows = math.ceil(len(runs) / 6)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * rows, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    # The legend's entries also go into the PNG's text chunk, so a reader (or a test) can list
    # the runs a figure shows without looking at it.
    fig.savefig(out, dpi=110, metadata={"Title": title, "Legend": "\n".join(r.label for r in runs)})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def plot_reward(runs: list[RunData], out: Path, window: int = 1, title: str = "") -> Path:
    """Training reward, training accuracy and held-out accuracy."""
    import matplotlib.pyplot as plt

    styles = _styles(runs)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for run, style in zip(runs, styles):
        _line(axes[0], run, style, "reward_mean", window, run.label)
        _line(axes[1], run, style, "accuracy", window, run.label)
        if run.evals:
            axes[2].plot(
                [int(r["step"]) for r in run.evals],
                [as_float(r["eval_accuracy"]) for r in run.evals],
                marker="o",
                markersize=3,
                **style,
            )
    suffix = f" ({window}-step mean)" if window > 1 else ""
    for ax, name in zip(
        axes, ("training reward" + suffix, "training accuracy" + suffix, "held-out accuracy")
    ):
        ax.set_title(name)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    return _finish(fig, axes, runs, styles, out, title or "reward and accuracy")


def plot_log_ratio(runs: list[RunData], out: Path, title: str = "") -> Path:
    """Per step, the band between the smallest and largest log(π_θ/π_old) over response tokens."""
    import matplotlib.pyplot as plt

    styles = _styles(runs)
    families = list(dict.fromkeys(r.family for r in runs))
    fig, axes = plt.subplots(1, len(families) + 1, figsize=(5 * (len(families) + 1), 4.2), squeeze=False)
    axes = axes[0]
    lo_all, hi_all = [], []
    for run, style in zip(runs, styles):
        steps, lo = run.series("log_ratio_min")
        _, hi = run.series("log_ratio_max")
        if not steps:
            continue
        lo_all += [v for v in lo if math.isfinite(v)]
        hi_all += [v for v in hi if math.isfinite(v)]
        for ax in (axes[0], axes[1 + families.index(run.family)]):
            ax.fill_between(steps, lo, hi, color=style["color"], alpha=0.12, linewidth=0)
            ax.plot(steps, lo, linewidth=0.9, **style)
            ax.plot(steps, hi, linewidth=0.9, **style)
    for ax in axes:
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xlabel("RL step")
        ax.set_ylabel("log π_θ/π_old (min and max over tokens)")
        ax.grid(alpha=0.3)
        if lo_all and hi_all:
            pad = 0.05 * (max(hi_all) - min(lo_all) + 1e-6)
            ax.set_ylim(min(lo_all) - pad, max(hi_all) + pad)
    axes[0].set_title("all runs")
    for i, fam in enumerate(families):
        axes[1 + i].set_title(fam)
    return _finish(fig, axes, runs, styles, out, title or "importance log-ratio range per step")


DIAGNOSTICS = (
    ("clip_frac_low", "clip fraction (low side)"),
    ("clip_frac_high", "clip fraction (high side)"),
    ("entropy", "entropy (nats/token)"),
    ("response_length", "response length (tokens)"),
    ("grad_norm", "gradient norm (before clipping)"),
    ("approx_kl", "approx KL(π_old || π_θ)"),
)


def plot_diagnostics(runs: list[RunData], out: Path, window: int = 1, title: str = "") -> Path:
    """Clip fractions, entropy, response length, gradient norm and approximate KL."""
    import matplotlib.pyplot as plt

    styles = _styles(runs)
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for ax, (key, name) in zip(axes.flat, DIAGNOSTICS):
        drawn = False
        for run, style in zip(runs, styles):
            drawn |= _line(ax, run, style, key, window, run.label)
        ax.set_title(
            name + (f" ({window}-step mean)" if window > 1 else "") + ("" if drawn else " — not logged")
        )
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    return _finish(fig, axes, runs, styles, out, title or "training diagnostics")


def plot_runs(
    run_dirs: list[str | Path],
    out_dir: str | Path,
    *,
    prefix: str = "",
    labels: list[str] | None = None,
    smooth_window: int = 1,
    title: str = "",
) -> list[Path]:
    """Write the overlay figures for ``run_dirs`` into ``out_dir``; returns the PNG paths.

    Files: ``{prefix}reward.png``, ``{prefix}log_ratio.png``, ``{prefix}diagnostics.png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    runs = load_runs(run_dirs, labels)
    out_dir = Path(out_dir)
    head = f"{title}: " if title else ""
    return [
        plot_reward(runs, out_dir / f"{prefix}reward.png", smooth_window, f"{head}reward and accuracy"),
        plot_log_ratio(
            runs, out_dir / f"{prefix}log_ratio.png", f"{head}importance log-ratio range per step"
        ),
        plot_diagnostics(
            runs, out_dir / f"{prefix}diagnostics.png", smooth_window, f"{head}training diagnostics"
        ),
    ]
