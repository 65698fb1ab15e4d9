"""The stability study: GMPO against GRPO on the CPU demo tasks, under off-policy stress.

Each (task, loss, seed) is one ``mm-gmpo train`` in a child process (so runs can go side by side
and a crash stays one row of the table); the study then reads every run's ``metrics.jsonl``,
draws the overlay figures and writes a markdown report with the table.

Stress: the demo config plus ``STRESS`` — four passes over each rollout batch (with the demo's
two mini-batches, eight optimizer steps per batch of samples instead of two) at twice the
demo's learning rate, so the later mini-batches train on samples the policy has moved away
from and the importance ratios can drift. Clip ranges stay at each loss's paper default
(GRPO 0.2 in ratio space, GMPO 0.4 in log space), as the paper compares them.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_gmpo.analysis.plots import as_float, load_runs, plot_runs

# Default folders, relative to the working directory like every other output of mm-gmpo
# (run from the repository root, the report lands in its docs/stability).
REPORT_DIR = Path("docs") / "stability"
RUNS_DIR = Path("runs") / "stability"

# The off-policy stress applied on top of each demo config (see the module docstring).
STRESS = ["train.ppo_epochs=4", "optim.lr=1e-3"]
# Bookkeeping that does not change the optimisation: fresh runs, no mid-run checkpoints,
# no tensorboard files, no progress bar in the child logs.
HOUSEKEEPING = [
    "train.resume=never",
    "train.save_every=0",
    "train.log_tensorboard=false",
    "train.progress=false",
]
QUICK = {"seeds": [0], "steps": 6, "eval_limit": 100}

# A run "collapsed" when held-out accuracy ends this far below where RL started.
COLLAPSE_DROP = 0.10
# Metrics whose non-finite value marks a run as diverged.
FINITE_KEYS = ("reward_mean", "log_ratio_min", "log_ratio_max", "entropy", "grad_norm", "approx_kl")


@dataclass(frozen=True)
class Arm:
    """One loss setting of the study: a registry loss, optionally with its own clip range.

    Written ``LOSS`` (the loss's paper default clip) or ``LOSS@EPS`` / ``LOSS@LOW/HIGH`` (the
    clip in the loss's own space: log space for gmpo*, ratio space otherwise), so the same
    study can compare GMPO and GRPO at their paper defaults and at one matched trust region.
    """

    label: str  # as written; names the run directories and the table rows
    loss: str
    clip_low: float
    clip_high: float
    log_space: bool
    explicit_clip: bool

    @property
    def overrides(self) -> list[str]:
        ov = [f"loss.name={self.loss}"]
        if self.explicit_clip:
            ov += [f"loss.clip_low={self.clip_low:g}", f"loss.clip_high={self.clip_high:g}"]
        return ov

    @property
    def ratio_bounds(self) -> tuple[float, float]:
        """The trust region as bounds on one token's ratio π_θ/π_old, whatever the clip's space."""
        if self.log_space:
            return math.exp(-self.clip_low), math.exp(self.clip_high)
        return 1.0 - self.clip_low, 1.0 + self.clip_high


def parse_arm(spec: str) -> Arm:
    """``gmpo``, ``gmpo@0.2`` or ``grpo@0.33/0.49`` → :class:`Arm`; a bad spec names itself."""
    from mm_gmpo.objective.losses import LOSSES

    name, sep, clip = spec.partition("@")
    if name not in LOSSES:
        raise ValueError(f"study arm {spec!r}: unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}")
    loss = LOSSES[name]
    low, high = loss.clip_low, loss.clip_high
    if sep:
        try:
            parts = [float(x) for x in clip.split("/")]
        except ValueError:
            parts = []
        ratio_low_ok = loss.log_space_clip or (parts and parts[0] < 1.0)
        if len(parts) not in (1, 2) or not all(x > 0 for x in parts) or not ratio_low_ok:
            raise ValueError(
                f"study arm {spec!r}: write the clip as LOSS@EPS or LOSS@LOW/HIGH with positive numbers"
                + ("" if loss.log_space_clip else " (ratio space: LOW below 1)")
            )
        low, high = parts[0], parts[-1]
    return Arm(spec, name, low, high, loss.log_space_clip, bool(sep))


# One line per task for the report: what it is and why it is in the study.
TASK_NOTES = {
    "text": "`configs/demo_text.yaml`, the text demo: name the largest of four digits; the answer "
    "`\\boxed{8}` has one token the policy chooses, the rest is format",
    "vl": "`configs/demo_vl.yaml`, the VL demo: count the squares in a picture (tiny Qwen2.5-VL); "
    "again one chosen token per answer",
    "sorted": "`configs/study_sorted.yaml`: sort four digits (`\\boxed{1358}`), four chosen tokens "
    "per answer, so a sequence's tokens carry different ratios; every seed starts from one "
    "warm-started policy (`train.base_seed=0`)",
}


@dataclass
class Task:
    name: str  # "text" or "vl"
    config: Path


@dataclass
class RunResult:
    task: str
    loss: str
    seed: int
    run_dir: Path
    returncode: int
    wall_s: float
    summary: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    reused: bool = False  # finished by an earlier invocation (--reuse); wall_s is then train()'s own


def discover_tasks(wanted: list[str] | None = None) -> tuple[list[Task], dict[str, str]]:
    """The demo tasks that exist and load; the others with the reason they were left out.

    text: ``configs/demo_text.yaml``; vl: ``configs/demo_vl.yaml``; sorted:
    ``configs/study_sorted.yaml``, the multi-token text task (each included when the file
    exists and its config validates).
    """
    from mm_gmpo.resources import configs_dir
    from mm_gmpo.train.config import ConfigError, load_config

    configs = configs_dir()  # the shipped configs: the same from a checkout and an installed package
    candidates = {
        "text": configs / "demo_text.yaml",
        "vl": configs / "demo_vl.yaml",
        "sorted": configs / "study_sorted.yaml",
    }
    tasks, skipped = [], {}
    for name, path in candidates.items():
        if wanted and name not in wanted:
            skipped[name] = "not requested: --tasks"
            continue
        if not path.is_file():
            skipped[name] = f"configs/{path.name} does not exist"
            continue
        try:
            load_config(path, STRESS)
        except (ConfigError, Exception) as exc:  # noqa: B014 - any failure to load leaves the task out
            skipped[name] = f"configs/{path.name} does not load: {exc}"
            continue
        tasks.append(Task(name, path))
    return tasks, skipped


def child_env(jobs: int) -> dict[str, str]:
    """Environment of a training child.

    Torch threads: when the caller has not set ``OMP_NUM_THREADS``, each of ``jobs`` children
    gets ``cpus // jobs`` threads (at least 1), because children each using every core
    oversubscribe the machine and torch on CPU slows down badly under contention. A value the
    caller set is passed through untouched.
    """
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, jobs)))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_overrides(
    task: Task,
    arm: Arm,
    seed: int,
    run_dir: Path,
    steps: int | None,
    eval_every: int,
    eval_limit: int,
    extra: list[str],
) -> list[str]:
    ov = [
        *STRESS,
        *HOUSEKEEPING,
        *arm.overrides,
        f"train.seed={seed}",
        f"train.output_dir={run_dir}",
        f"train.eval_every={eval_every}",
    ]
    if steps is not None:
        ov.append(f"train.steps={steps}")
    if eval_limit:
        ov.append(f"data.eval_limit={eval_limit}")
    return ov + list(extra)


def run_one(
    task: Task, loss: str, seed: int, run_dir: Path, overrides: list[str], env: dict[str, str], reuse: bool
) -> RunResult:
    """One training child; its stdout/stderr go to ``run_dir/train.log``."""
    summary_path = run_dir / "summary.json"
    cmd_path = run_dir / "study_command.json"
    cmd = [sys.executable, "-m", "mm_gmpo", "train", str(task.config), *overrides]
    if reuse and summary_path.is_file() and cmd_path.is_file():
        if json.loads(cmd_path.read_text()).get("overrides") == overrides:
            summary = json.loads(summary_path.read_text())
            wall = float(summary.get("wall_time_s", 0.0))
            return RunResult(task.name, loss, seed, run_dir, 0, wall, summary, reused=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary_path.unlink(missing_ok=True)
    cmd_path.write_text(json.dumps({"config": str(task.config), "overrides": overrides}, indent=2))
    t0 = time.perf_counter()
    with (run_dir / "train.log").open("w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - t0
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return RunResult(task.name, loss, seed, run_dir, proc.returncode, wall, summary)


# ---------------------------------------------------------------- statistics
def run_stats(result: RunResult) -> dict[str, Any]:
    """Per-run numbers for the table: log-ratio range, accuracy, divergence."""
    stats: dict[str, Any] = {"ok": result.returncode == 0 and bool(result.summary)}
    if not (result.run_dir / "metrics.jsonl").is_file():
        stats["diverged"] = "crashed before logging" if result.returncode else "no metrics"
        return stats
    run = load_runs([result.run_dir])[0]
    ranges, live, lows, highs = [], [], [], []
    non_finite = False
    for row in run.train:
        lo, hi = as_float(row.get("log_ratio_min")), as_float(row.get("log_ratio_max"))
        if math.isfinite(lo) and math.isfinite(hi):
            ranges.append(hi - lo)
            if is_live(row):
                live.append(hi - lo)
            lows.append(lo)
            highs.append(hi)
        non_finite |= any(k in row and not math.isfinite(as_float(row[k])) for k in FINITE_KEYS)
    entropy = [v for v in run.series("entropy")[1] if math.isfinite(v)]
    acc = [v for v in run.series("accuracy")[1] if math.isfinite(v)]
    tail = max(1, len(run.train) // 10)
    stats.update(
        steps=len(run.train),
        range_median=statistics.median(ranges) if ranges else math.nan,
        range_p90=_quantile(ranges, 0.9),
        range_live_median=statistics.median(live) if live else math.nan,
        live_steps=len(live),
        range_max=max(ranges) if ranges else math.nan,
        log_ratio_min=min(lows) if lows else math.nan,
        log_ratio_max=max(highs) if highs else math.nan,
        entropy_first=entropy[0] if entropy else math.nan,
        entropy_last=statistics.fmean(entropy[-tail:]) if entropy else math.nan,
        train_acc_last=statistics.fmean(acc[-tail:]) if acc else math.nan,
        clip_frac=statistics.fmean(
            as_float(r.get("clip_frac_low", 0)) + as_float(r.get("clip_frac_high", 0)) for r in run.train
        )
        if run.train
        else math.nan,
        eval_before=result.summary.get("eval_accuracy_before", math.nan),
        eval_after=result.summary.get("eval_accuracy_after", math.nan),
    )
    reasons = []
    if result.returncode != 0:
        reasons.append(f"exit {result.returncode}" + _error_line(result.run_dir))
    if non_finite:
        reasons.append("NaN/inf")
    before, after = stats["eval_before"], stats["eval_after"]
    evals = [as_float(r["eval_accuracy"]) for r in run.evals]
    peak = max((v for v in evals if math.isfinite(v)), default=math.nan)
    stats["eval_peak"] = peak
    if math.isfinite(before) and math.isfinite(after) and after < before - COLLAPSE_DROP:
        reasons.append(f"held-out accuracy {before:.2f} -> {after:.2f}")
    elif math.isfinite(peak) and math.isfinite(after) and after < peak - COLLAPSE_DROP:
        reasons.append(f"held-out accuracy fell from its peak {peak:.2f} to {after:.2f}")
    stats["diverged"] = ", ".join(reasons)
    return stats


def is_live(row: dict[str, Any]) -> bool:
    """A step whose loss had a gradient: some prompt group had rewards that differ.

    When every group's rewards are equal all advantages are 0 and the step's loss is flat; the
    policy then moves only by the optimizer's momentum (or not at all), so the step says little
    about how the objective holds the ratios.
    """
    return as_float(row.get("zero_variance_groups", 0.0)) < 1.0


def _error_line(run_dir: Path) -> str:
    """The last line of the child's log that names an exception, for the table."""
    log = run_dir / "train.log"
    if not log.is_file():
        return ""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if "Error" in line or "Exception" in line:
            return f" ({line.strip()[:160]})"
    return ""


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (nan for no values)."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _fmt(v: Any, spec: str = ".2f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def _median(values: list[float]) -> float:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def summarize(results: list[RunResult]) -> list[dict[str, Any]]:
    """One row per (task, loss): medians over seeds, per-seed values, divergence count."""
    rows = []
    keys = list(dict.fromkeys((r.task, r.loss) for r in results))
    for task, loss in keys:
        group = [r for r in results if (r.task, r.loss) == (task, loss)]
        s = [r.stats for r in group]
        rows.append(
            {
                "task": task,
                "loss": loss,
                "seeds": [r.seed for r in group],
                "range_median": _median([x.get("range_median", math.nan) for x in s]),
                "range_per_seed": [x.get("range_median", math.nan) for x in s],
                "range_p90": _median([x.get("range_p90", math.nan) for x in s]),
                "range_live": _median([x.get("range_live_median", math.nan) for x in s]),
                "range_live_per_seed": [x.get("range_live_median", math.nan) for x in s],
                "live_steps": [x.get("live_steps", 0) for x in s],
                "log_ratio_min": min((x.get("log_ratio_min", math.nan) for x in s), default=math.nan),
                "log_ratio_max": max((x.get("log_ratio_max", math.nan) for x in s), default=math.nan),
                "eval_before": [x.get("eval_before", math.nan) for x in s],
                "eval_after": [x.get("eval_after", math.nan) for x in s],
                "eval_after_median": _median([x.get("eval_after", math.nan) for x in s]),
                "entropy_last": _median([x.get("entropy_last", math.nan) for x in s]),
                "entropy_first": _median([x.get("entropy_first", math.nan) for x in s]),
                "clip_frac": _median([x.get("clip_frac", math.nan) for x in s]),
                "diverged": [
                    f"seed {r.seed}: {r.stats['diverged']}" for r in group if r.stats.get("diverged")
                ],
                "n": len(group),
            }
        )
    return rows


# ---------------------------------------------------------------- report
def _compare(g_row: dict[str, Any], p_row: dict[str, Any], key: str, per_seed: str) -> str:
    g, p = g_row[key], p_row[key]
    if not (math.isfinite(g) and math.isfinite(p)):
        return "no comparison (a loss has no finite log-ratio range)"
    pairs = [
        (a, b) for a, b in zip(g_row[per_seed], p_row[per_seed]) if math.isfinite(a) and math.isfinite(b)
    ]
    word = "narrower" if g < p else "not narrower"
    return (
        f"GMPO {g:.2f} against GRPO {p:.2f} ({g / p:.2f}x): **{word}**; GMPO narrower on "
        f"{sum(a < b for a, b in pairs)} of {len(pairs)} seed pairs"
    )


def comparison_pairs(labels: list[str]) -> list[tuple[str, str, str]]:
    """(GMPO arm, GRPO arm, how they relate) for every pair the verdicts compare.

    Two kinds: the paper's pairing (``gmpo`` against ``grpo``, each at its own default clip,
    GMPO's the wider trust region), and pairs at a matched trust region — a geometric-mean arm
    and a ``grpo`` arm whose clips bound one token's ratio π_θ/π_old to the same interval
    (within 1%), which separates the objective's effect from the clip's.
    """
    arms = [parse_arm(label) for label in labels]
    pairs = []
    if "gmpo" in labels and "grpo" in labels:
        g, p = parse_arm("gmpo").ratio_bounds, parse_arm("grpo").ratio_bounds
        pairs.append(
            (
                "gmpo",
                "grpo",
                f"paper defaults: GMPO ratio in [{g[0]:.2f}, {g[1]:.2f}], GRPO [{p[0]:.2f}, {p[1]:.2f}]",
            )
        )
    for g in arms:
        for p in arms:
            if g.loss != "gmpo" or p.loss != "grpo" or not (g.explicit_clip or p.explicit_clip):
                continue
            same = all(abs(a - b) <= 0.01 * b for a, b in zip(g.ratio_bounds, p.ratio_bounds))
            if same:
                lo, hi = p.ratio_bounds
                pairs.append(
                    (g.label, p.label, f"matched trust region: ratio in [{lo:.2f}, {hi:.2f}] for both")
                )
    return pairs


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per compared pair and task (see :func:`comparison_pairs`), from the numbers."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        by = {r["loss"]: r for r in rows if r["task"] == task}
        for g_label, p_label, how in comparison_pairs(list(by)):
            g, p = by[g_label], by[p_label]
            out.append(
                f"**{task}, {g_label} vs {p_label}** ({how}): median per-step log-ratio range over all steps: "
                f"{_compare(g, p, 'range_median', 'range_per_seed')}. Over the steps with a gradient "
                f"(some group with reward variance): {_compare(g, p, 'range_live', 'range_live_per_seed')}. "
                f"Most negative log-ratio seen: GMPO {_fmt(g['log_ratio_min'])}, GRPO {_fmt(p['log_ratio_min'])}. "
                f"Runs diverged or collapsed: GMPO {len(g['diverged'])} of {g['n']}, "
                f"GRPO {len(p['diverged'])} of {p['n']}."
            )
    return out


def _arm_text(arm: Arm) -> str:
    space = "log" if arm.log_space else "ratio"
    lo, hi = arm.ratio_bounds
    return (
        f"`{arm.label}` clip {arm.clip_low:g} / {arm.clip_high:g} in {space} space, "
        f"one token's ratio held to [{lo:.2f}, {hi:.2f}]"
    )


def _setting_lines(settings: dict[str, Any], skipped: dict[str, str], n_results: int) -> list[str]:
    """The report's header and "Setting" section: what ran, under which stress, on what machine."""
    return [
        "# Stability study: GMPO vs GRPO on the CPU demo tasks",
        "",
        "Written by `" + settings["command"] + "` (do not edit by hand; rerun the command).",
        "",
        "## Setting",
        "",
        f"- Tasks run: {', '.join(settings['tasks']) or 'none'}."
        + "".join(f" Not run: **{k}** ({v})." for k, v in skipped.items()),
        *[f"  - {t}: {TASK_NOTES.get(t, '')}." for t in settings["tasks"]],
        f"- Losses: {', '.join(settings['losses'])}; seeds: {', '.join(map(str, settings['seeds']))}.",
        "- Off-policy stress on top of each task's config: `" + " ".join(STRESS) + "`: four passes "
        "over each rollout batch, so the later mini-batches train on samples the policy has moved "
        "away from. Per task, optimizer steps per batch of samples and learning rate, stressed "
        "(config): "
        + "; ".join(
            f"{t} {d['stressed_updates']} ({d['updates']}), lr {d['stressed_lr']:g} ({d['lr']:g}), "
            f"{d['steps']} RL steps"
            for t, d in settings["task_setup"].items()
        )
        + ".",
        "- Arms and their clips (a bare loss name is its paper default; the paper compares GMPO at "
        "0.4 in log space with GRPO at 0.2 in ratio space): "
        + "; ".join(_arm_text(parse_arm(label)) for label in settings["losses"])
        + ".",
        "- Held-out (greedy) evaluation before and after RL"
        + (f" and every {settings['eval_every']} steps" if settings["eval_every"] else "")
        + (f", on {settings['eval_limit']} records" if settings["eval_limit"] else "")
        + ".",
        f"- Extra overrides, applied after the stress (so they win where both set a field): "
        f"`{' '.join(settings['extra']) or 'none'}`.",
        f"- Machine: {settings['machine']}; {settings['jobs']} run(s) side by side, "
        f"OMP_NUM_THREADS={settings['omp']} per run; first run's start to last run's end "
        f"{settings['runs_span_s'] / 60:.1f} min; this invocation {settings['wall_s'] / 60:.1f} min "
        f"(1-min load average {settings['load'][0]} at the start, {settings['load'][1]} at the end: "
        "other work on the machine stretches the time)"
        + (
            f"; {settings['reused']} of {n_results} runs were finished by an earlier invocation and "
            "reused (`--reuse`), their times are in the Runs table."
            if settings.get("reused")
            else "."
        ),
        "",
        "The log-ratio is δ = log π_θ − log π_old over response tokens, taken in every micro-batch of "
        "every pass of a step; a step's range is its largest δ minus its smallest (the first "
        "mini-batch of the first pass has δ = 0, so every range contains 0). A run counts as "
        "diverged when a logged loss metric is NaN/inf, the child exits with an error, or held-out "
        f"accuracy ends more than {COLLAPSE_DROP:.2f} below its value before RL or below its best "
        "evaluation during the run (a collapse of accuracy).",
        "",
    ]


def _result_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The "Result" section: verdicts, then one table row per task and loss."""
    lines = [
        "## Result",
        "",
        *[f"- {v}" for v in verdicts(rows)],
        "",
        "| task | loss | median per-step log-ratio range (median over seeds) | per seed | most negative δ "
        "(all seeds, steps) | largest δ | 90th-percentile per-step range (median over seeds) | median range over "
        "steps with a gradient (per seed; steps) | held-out accuracy before → after (per seed) | median final held-out accuracy | "
        "entropy first → last 10% | clip fraction | diverged or collapsed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_seed = ", ".join(_fmt(v) for v in r["range_per_seed"])
        live = (
            f"**{_fmt(r['range_live'])}** ("
            + ", ".join(f"{_fmt(v)}; {n}" for v, n in zip(r["range_live_per_seed"], r["live_steps"]))
            + ")"
        )
        acc = ", ".join(f"{_fmt(b)} → {_fmt(a)}" for b, a in zip(r["eval_before"], r["eval_after"]))
        div = "; ".join(r["diverged"]) if r["diverged"] else f"none of {r['n']}"
        lines.append(
            f"| {r['task']} | {r['loss']} | **{_fmt(r['range_median'])}** | {per_seed} | "
            f"{_fmt(r['log_ratio_min'])} | {_fmt(r['log_ratio_max'])} | {_fmt(r['range_p90'])} | {live} | {acc} | {_fmt(r['eval_after_median'], '.3f')} | "
            f"{_fmt(r['entropy_first'], '.3f')} → {_fmt(r['entropy_last'], '.3f')} | {_fmt(r['clip_frac'], '.3f')} | {div} |"
        )
    return lines


def _runs_and_figures_lines(
    results: list[RunResult], figures: dict[str, list[Path]], smooth: int
) -> list[str]:
    """The "Runs" table and the "Figures" section with a caption per figure."""
    lines: list[str] = []
    lines += [
        "",
        "## Runs",
        "",
        "| task | loss | seed | exit | wall (s) | steps | range median | range max | directory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        s = res.stats
        lines.append(
            f"| {res.task} | {res.loss} | {res.seed} | {res.returncode} | {res.wall_s:.0f} | {s.get('steps', '–')} | "
            f"{_fmt(s.get('range_median'))} | {_fmt(s.get('range_max'))} | `{_rel(res.run_dir)}` |"
        )
    lines += ["", "## Figures", ""]
    captions = {
        "log_ratio": "Per step, the band between the smallest and largest δ over response tokens "
        "(the paper's Figure 1 style); left all runs, then one panel per loss.",
        "reward": "Training reward and accuracy of the sampled responses ({w}-step trailing mean) "
        "and held-out greedy accuracy.",
        "diagnostics": "Clip fractions, entropy, response length, gradient norm (before clipping) "
        "and approximate KL(π_old‖π_θ) ({w}-step trailing mean).",
    }
    order = {"log_ratio": 0, "reward": 1, "diagnostics": 2}
    for task, paths in figures.items():
        lines.append(f"### {task}")
        lines.append("")
        for p in sorted(paths, key=lambda q: order.get(q.stem.removeprefix(f"{task}_"), 9)):
            key = p.stem.removeprefix(f"{task}_")
            lines.append(captions.get(key, key).format(w=smooth))
            lines.append("")
            lines.append(f"![{task} {key}]({p.name})")
            lines.append("")
    return lines


def _write_results_json(
    out_dir: Path,
    results: list[RunResult],
    rows: list[dict[str, Any]],
    skipped: dict[str, str],
    settings: dict[str, Any],
) -> None:
    """The machine-readable twin of the report."""
    (out_dir / "results.json").write_text(
        json.dumps(
            {
                "settings": settings,
                "skipped": skipped,
                "table": rows,
                "runs": [
                    {
                        "task": r.task,
                        "loss": r.loss,
                        "seed": r.seed,
                        "returncode": r.returncode,
                        "wall_s": round(r.wall_s, 1),
                        "run_dir": _rel(r.run_dir),
                        **r.stats,
                    }
                    for r in results
                ],
            },
            indent=2,
            default=str,
        )
    )


def write_report(
    out_dir: Path,
    results: list[RunResult],
    rows: list[dict[str, Any]],
    figures: dict[str, list[Path]],
    skipped: dict[str, str],
    settings: dict[str, Any],
) -> Path:
    lines = [
        *_setting_lines(settings, skipped, len(results)),
        *_result_lines(rows),
        *_runs_and_figures_lines(results, figures, settings["smooth"]),
    ]
    out = out_dir / "REPORT.md"
    out.write_text("\n".join(lines).rstrip() + "\n")
    _write_results_json(out_dir, results, rows, skipped, settings)
    return out


def _runs_span(results: list[RunResult]) -> float:
    """Seconds from the first run's start to the last run's end, from the files they left.

    ``study_command.json`` is written as a run starts and ``summary.json`` as it ends, so this
    holds for runs reused from an earlier invocation too.
    """
    starts = [
        (r.run_dir / "study_command.json").stat().st_mtime
        for r in results
        if (r.run_dir / "study_command.json").is_file()
    ]
    ends = [
        (r.run_dir / "summary.json").stat().st_mtime
        for r in results
        if (r.run_dir / "summary.json").is_file()
    ]
    return max(ends) - min(starts) if starts and ends else math.nan


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _task_figures(
    found: list[Task], results: list[RunResult], out_dir: Path, smooth: int
) -> dict[str, list[Path]]:
    """Overlay figures of each task's runs (runs that left no metrics are left out)."""
    figures: dict[str, list[Path]] = {}
    for task in found:
        dirs = [r.run_dir for r in results if r.task == task.name and (r.run_dir / "metrics.jsonl").is_file()]
        if dirs:
            figures[task.name] = plot_runs(
                dirs,
                out_dir,
                prefix=f"{task.name}_",
                smooth_window=smooth,
                title=f"{task.name} task, off-policy stress",
            )
    return figures


def _task_setup(found: list[Task], extra: list[str], steps: int | None) -> dict[str, dict[str, Any]]:
    """Per task: optimizer steps per batch and learning rate, from its config and under the stress."""
    from mm_gmpo.train.config import load_config

    task_setup = {}
    for task in found:
        base, stressed = load_config(task.config), load_config(task.config, [*STRESS, *extra])
        task_setup[task.name] = {
            "updates": base.train.ppo_epochs * base.train.mini_batches,
            "stressed_updates": stressed.train.ppo_epochs * stressed.train.mini_batches,
            "lr": base.optim.lr,
            "stressed_lr": stressed.optim.lr,
            "steps": steps if steps is not None else base.train.steps,
        }
    return task_setup


def run_study(
    *,
    out_dir: str | Path = REPORT_DIR,
    runs_dir: str | Path = RUNS_DIR,
    losses: list[str] | None = None,
    seeds: list[int] | None = None,
    tasks: list[str] | None = None,
    steps: int | None = None,
    eval_every: int = 25,
    eval_limit: int = 0,
    jobs: int = 2,
    smooth: int = 5,
    extra: list[str] | None = None,
    reuse: bool = False,
    command: str = "mm-gmpo study",
) -> dict[str, Any]:
    """Run the grid, write ``out_dir/REPORT.md`` (+ figures, ``results.json``); returns the table."""
    t0 = time.perf_counter()
    load_start = _load()
    losses = losses or ["gmpo", "grpo"]
    arms = [parse_arm(spec) for spec in losses]
    seeds = [0, 1, 2] if seeds is None else seeds
    extra = extra or []
    out_dir, runs_dir = Path(out_dir).resolve(), Path(runs_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    found, skipped = discover_tasks(tasks)
    env = child_env(jobs)
    grid = [(t, arm, seed) for t in found for arm in arms for seed in seeds]

    def go(item: tuple[Task, Arm, int]) -> RunResult:
        task, arm, seed = item
        run_dir = runs_dir / task.name / f"{arm.label.replace('/', '-')}_seed{seed}"
        ov = run_overrides(task, arm, seed, run_dir, steps, eval_every, eval_limit, extra)
        res = run_one(task, arm.label, seed, run_dir, ov, env, reuse)
        print(
            f"[study] {task.name} {arm.label} seed {seed}: exit {res.returncode}, {res.wall_s:.0f} s, "
            f"held-out {res.summary.get('eval_accuracy_before', '?')} -> {res.summary.get('eval_accuracy_after', '?')}",
            flush=True,
        )
        return res

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(go, grid))
    for res in results:
        res.stats = run_stats(res)
    rows = summarize(results)
    figures = _task_figures(found, results, out_dir, smooth)
    task_setup = _task_setup(found, extra, steps)
    settings = {
        "command": command,
        "tasks": [t.name for t in found],
        "losses": losses,
        "seeds": seeds,
        "task_setup": task_setup,
        "eval_every": eval_every,
        "eval_limit": eval_limit,
        "extra": extra,
        "jobs": jobs,
        "omp": env["OMP_NUM_THREADS"],
        "smooth": smooth,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "wall_s": time.perf_counter() - t0,
        "load": [load_start, _load()],
        "reused": sum(r.reused for r in results),
        "runs_span_s": _runs_span(results),
    }
    report = write_report(out_dir, results, rows, figures, skipped, settings)
    print(f"[study] report: {report}")
    for v in verdicts(rows):
        print(f"[study] {v}")
    crashed = [f"{r.task} {r.loss} seed {r.seed}" for r in results if r.returncode != 0]
    if crashed:
        print(f"[study] runs that exited with an error (see their train.log): {', '.join(crashed)}")
    return {"report": str(report), "table": rows, "skipped": skipped, "figures": figures, "crashed": crashed}
