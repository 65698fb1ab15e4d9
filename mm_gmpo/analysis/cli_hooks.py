"""``mm-gmpo plot`` and ``mm-gmpo study``: the argparse side of :mod:`mm_gmpo.analysis`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mm_gmpo.analysis.study import QUICK, REPORT_DIR, RUNS_DIR


def cmd_plot(args: argparse.Namespace) -> int:
    from mm_gmpo.analysis.plots import plot_runs

    out = Path(args.out) if args.out else Path(args.run_dirs[0])
    paths = plot_runs(
        args.run_dirs,
        out,
        prefix=args.prefix,
        labels=args.labels,
        smooth_window=args.smooth,
        title=args.title,
    )
    for p in paths:
        print(p)
    return 0


def _bad_arms(command: str, specs: list[str] | None) -> int:
    """2 with a one-line error when an arm does not parse (before any run starts), else 0."""
    from mm_gmpo.analysis.study import parse_arm

    for spec in specs or []:
        try:
            parse_arm(spec)
        except ValueError as exc:
            print(f"mm-gmpo {command}: error: {exc}", file=sys.stderr)
            return 2
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from mm_gmpo.analysis.probe import run_probe

    if _bad_arms("probe", args.losses):
        return 2

    argv = sys.argv[sys.argv.index("probe") + 1 :] if "probe" in sys.argv else []
    run_probe(
        args.tasks, args.losses, args.steps, args.out, args.overrides, "mm-gmpo probe " + shlex.join(argv)
    )
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from mm_gmpo.analysis.study import run_study

    if _bad_arms("study", args.losses):
        return 2

    seeds, steps, eval_limit, eval_every = args.seeds, args.steps, args.eval_limit, args.eval_every
    out_dir, runs_dir = args.out_dir, args.runs_dir
    if args.quick:
        seeds = seeds or QUICK["seeds"]
        steps = steps or QUICK["steps"]
        eval_limit = eval_limit or QUICK["eval_limit"]
        eval_every = 0 if eval_every is None else eval_every
        runs_dir = runs_dir or str(RUNS_DIR.with_name("stability_quick"))
        out_dir = out_dir or str(Path(runs_dir) / "report")
    result = run_study(
        out_dir=out_dir or REPORT_DIR,
        runs_dir=runs_dir or RUNS_DIR,
        losses=args.losses,
        seeds=seeds,
        tasks=args.tasks,
        steps=steps,
        eval_every=25 if eval_every is None else eval_every,
        eval_limit=eval_limit or 0,
        jobs=args.jobs,
        smooth=args.smooth,
        extra=args.overrides,
        reuse=args.reuse,
        command="mm-gmpo study "
        + shlex.join(sys.argv[sys.argv.index("study") + 1 :] if "study" in sys.argv else []),
    )
    # The report is written either way; the exit status says whether every run finished.
    return 1 if result["crashed"] or not result["table"] else 0


def add_subcommands(subparsers) -> None:
    """Register ``plot`` and ``study`` on the ``mm-gmpo`` sub-command parser."""
    p = subparsers.add_parser("plot", help="overlay figures (reward, log-ratio range, diagnostics) of runs")
    p.add_argument("run_dirs", nargs="+", help="run output directories (each with metrics.jsonl)")
    p.add_argument("--out", default=None, help="directory for the PNGs (default: the first run's)")
    p.add_argument("--prefix", default="compare_", help="file name prefix of the PNGs")
    p.add_argument("--labels", nargs="+", default=None, help="legend names (default: from each config.yaml)")
    p.add_argument("--smooth", type=int, default=1, help="trailing mean window for the line plots")
    p.add_argument("--title", default="", help="figure title prefix")
    p.set_defaults(func=cmd_plot)

    s = subparsers.add_parser(
        "study", help="GMPO vs GRPO stability study on the CPU demo tasks; writes docs/stability/REPORT.md"
    )
    s.add_argument("--quick", action="store_true", help="1 seed, 6 steps, 100 held-out records (a smoke run)")
    s.add_argument(
        "--losses",
        nargs="+",
        default=None,
        help="arms: LOSS, LOSS@EPS or LOSS@LOW/HIGH (clip in the loss's own space); default: gmpo grpo",
    )
    s.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (quick: 0)")
    s.add_argument(
        "--tasks",
        nargs="+",
        choices=["text", "vl", "sorted"],
        default=None,
        help="default: all three (text and vl demos, the multi-token sorted task)",
    )
    s.add_argument("--steps", type=int, default=None, help="RL steps per run (default: the demo config's)")
    s.add_argument(
        "--eval-every", type=int, default=None, help="held-out evaluation every N steps (default 25)"
    )
    s.add_argument("--eval-limit", type=int, default=None, help="held-out records (default: all)")
    s.add_argument("--jobs", type=int, default=2, help="runs side by side")
    s.add_argument("--smooth", type=int, default=5, help="trailing mean window for the line plots")
    s.add_argument("--out-dir", default=None, help="report directory (default docs/stability)")
    s.add_argument("--runs-dir", default=None, help="run directories (default runs/stability)")
    s.add_argument("--reuse", action="store_true", help="keep finished runs whose overrides match")
    s.add_argument("overrides", nargs="*", help="extra section.field=value for every run")
    s.set_defaults(func=cmd_study)

    q = subparsers.add_parser(
        "probe", help="per-token look at where extreme log-ratios come from, under the study's stress"
    )
    q.add_argument("--tasks", nargs="+", choices=["text", "vl", "sorted"], default=None, help="default: all")
    q.add_argument("--losses", nargs="+", default=None, help="study arms (LOSS[@EPS]); default: gmpo grpo")
    q.add_argument("--steps", type=int, default=20, help="RL steps per probe run")
    q.add_argument("--out", default=str(REPORT_DIR / "PROBE.md"), help="markdown table")
    q.add_argument("overrides", nargs="*", help="extra section.field=value for every run")
    q.set_defaults(func=cmd_probe)
