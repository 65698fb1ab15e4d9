"""One entry point: ``mm-gmpo train|demo|eval|export|config|plot|study|probe`` (also ``python -m mm_gmpo``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

DEBUG_HELP = "show the full traceback of every error (default: bad input ends in one line, exit 2)"


def _cmd_train(args: argparse.Namespace) -> int:
    from mm_gmpo.resources import resolve_config
    from mm_gmpo.train.config import load_config
    from mm_gmpo.train.run import train

    cfg = load_config(resolve_config(args.config), args.overrides)
    if args.dry_run:
        from mm_gmpo.train.config import to_yaml, validate_world

        world = args.world_size or int(os.environ.get("WORLD_SIZE", "1"))
        validate_world(cfg, world)
        print(to_yaml(cfg), end="")
        t = cfg.train
        print(
            f"# dry run OK: world size {world}, {t.prompts_per_step // world} prompts x {cfg.rollout.n} samples "
            f"per rank per step, {t.mini_batches} optimizer step(s) per pass, {t.ppo_epochs} pass(es)"
        )
        from mm_gmpo.train.config import ConfigError
        from mm_gmpo.train.memory_plan import plan_memory, render_plan

        plan = plan_memory(cfg, world, args.gpu_mem)
        print("\n".join(f"# {line}".rstrip() for line in render_plan(plan).splitlines()))  # YAML comments
        message = plan.over_budget_message()
        if message:
            raise ConfigError(message)
        return 0
    summary = train(cfg)
    from mm_gmpo.train import dist

    if dist.is_main():
        print(json.dumps(summary, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import time

    from mm_gmpo.train.demo import pin_cpu_numerics, render_summary, run_demo

    pin_cpu_numerics()  # before torch's first kernel: the same seed gives the same numbers on any x86 CPU
    t0 = time.perf_counter()
    results = run_demo(
        args.paths, args.seeds, config=args.config, output_dir=args.output_dir, overrides=args.overrides
    )
    print(render_summary(results, time.perf_counter() - t0), flush=True)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from mm_gmpo.evaluation.cli import main_geometry, main_math_suite, main_tables

    runner = {"math": main_math_suite, "geometry": main_geometry, "tables": main_tables}[args.suite]
    return runner(args.rest)


def _cmd_export(args: argparse.Namespace) -> int:
    from mm_gmpo.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, merge=args.merge)
    print(f"[export] {'merged model' if args.merge else 'model'} written to {out}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from mm_gmpo.train.config import describe

    print(describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mm-gmpo", description="GMPO RL post-training for text and VL models"
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train from a YAML config with dotted overrides")
    p_train.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    p_train.add_argument(
        "config", help="YAML config file, or the name of a shipped one (configs/demo_text.yaml, demo_vl)"
    )
    p_train.add_argument(
        "overrides", nargs="*", help="section.field=value, e.g. optim.lr=1e-6 loss.name=grpo"
    )
    p_train.add_argument(
        "--dry-run",
        action="store_true",
        help="resolve and validate the config, print it and its per-GPU memory plan, exit",
    )
    p_train.add_argument(
        "--world-size",
        type=int,
        default=None,
        help="with --dry-run: ranks to check (default $WORLD_SIZE or 1)",
    )
    p_train.add_argument(
        "--gpu-mem",
        type=float,
        default=80.0,
        metavar="GIB",
        help="with --dry-run: memory per GPU in GiB; a memory plan over it fails the dry run (default 80)",
    )
    p_train.set_defaults(func=_cmd_train)
    p_demo = sub.add_parser("demo", help="the CPU demo: tiny model, synthetic task, before/after accuracy")
    p_demo.add_argument(
        "--paths",
        nargs="+",
        choices=["text", "vl"],
        default=["text"],
        help="the shipped demos to run, in order: text (configs/demo_text.yaml), vl (configs/demo_vl.yaml)",
    )
    p_demo.add_argument("--config", default=None, help="run this config instead of the shipped demos")
    p_demo.add_argument("--seeds", type=int, nargs="+", default=[0])
    p_demo.add_argument(
        "--output-dir",
        default=None,
        help="runs go to DIR/seedN (DIR/PATH/seedN for several paths); default: each config's train.output_dir",
    )
    p_demo.add_argument("overrides", nargs="*", help="section.field=value")
    p_demo.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    p_demo.set_defaults(func=_cmd_demo)
    p_eval = sub.add_parser(
        "eval", help="benchmarks: math (paper Table 1), geometry (Geometry3K/MathVision), tables"
    )
    p_eval.add_argument("suite", choices=["math", "geometry", "tables"])
    p_eval.add_argument("rest", nargs=argparse.REMAINDER, help="options of the suite (see --help of each)")
    p_eval.set_defaults(func=_cmd_eval)
    p_export = sub.add_parser(
        "export", help="write a checkpoint's model to a directory (--merge: LoRA folded into a plain model)"
    )
    p_export.add_argument(
        "checkpoint", help="a checkpoint (checkpoints/step_N), its model/, or a run directory"
    )
    p_export.add_argument("--out", required=True, help="new directory to write")
    p_export.add_argument(
        "--merge", action="store_true", help="merge a LoRA adapter into its base model (plain transformers)"
    )
    p_export.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    p_export.set_defaults(func=_cmd_export)
    p_cfg = sub.add_parser("config", help="list every config field with its default and help")
    p_cfg.set_defaults(func=_cmd_config)
    from mm_gmpo.analysis.cli_hooks import add_subcommands as add_analysis_subcommands

    add_analysis_subcommands(sub)  # plot, study, probe
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """The project's own errors: input the user can fix (a config, a record, an image, a missing
    file, an unreachable model), told in one line. Anything else is a bug and keeps its traceback."""
    from mm_gmpo.data.images import ImageError
    from mm_gmpo.data.record_io import RecordFormatError
    from mm_gmpo.data.records import BadRecordError
    from mm_gmpo.export import ExportError
    from mm_gmpo.hub import SourceError
    from mm_gmpo.train.config import ConfigError

    return (
        ConfigError,
        BadRecordError,
        ImageError,
        RecordFormatError,
        SourceError,
        FileNotFoundError,
        ExportError,
    )


def one_line_error(exc: BaseException) -> str:
    """``config error: ...`` / ``error: ...`` on one line (a message's own line breaks folded)."""
    from mm_gmpo.train.config import ConfigError

    kind = "config error" if isinstance(exc, ConfigError) else "error"
    return f"{kind}: {' '.join(str(exc).split())}"


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; the project's own errors end in one line on stderr and exit status 2.

    Every rank of a launched run exits with 2 and rank 0 prints the line (the errors a run
    raises are raised alike on every rank). ``--debug`` shows every traceback.
    """
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except user_errors() as exc:
        if args.debug:
            raise
        if os.environ.get("RANK", "0") == "0":
            print(one_line_error(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
