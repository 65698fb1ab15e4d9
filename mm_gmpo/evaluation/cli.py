"""Command lines behind ``eval/math_suite.py``, ``eval/geometry3k.py`` and ``eval/tables.py``.

The scripts are thin so the same code serves the package (``mm_gmpo.evaluation.cli.main_*``),
the scripts and tests. Every option of a suite overrides the paper protocol of that suite
only where given: ``--temperature 0.6 --n 8`` turns the greedy math protocol into avg@8 /
pass@8, and nothing else changes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mm_gmpo.evaluation.benchmarks import (
    MATH_BENCHMARKS,
    MATH_PROTOCOL,
    VL_BENCHMARKS,
    VL_PROTOCOL,
    Benchmark,
    EvalProtocol,
    get_benchmark,
    load_benchmark,
)
from mm_gmpo.evaluation.generators import (
    BACKENDS,
    BackendUnavailable,
    ModelSpec,
    build_generator,
    pick_backend,
)
from mm_gmpo.evaluation.report import SUMMARY_FILE, TABLE_FILE, compare, write_run_outputs
from mm_gmpo.evaluation.runner import BenchmarkResult, SettingsMismatch, run_benchmark

log = logging.getLogger("mm_gmpo.evaluation")


@dataclass(frozen=True)
class Suite:
    """Defaults of one script: which benchmarks, which protocol, which policy path."""

    name: str
    benchmarks: tuple[Benchmark, ...]
    default_benchmarks: tuple[str, ...]
    protocol: EvalProtocol
    modality: str
    description: str


MATH_SUITE = Suite(
    "math",
    MATH_BENCHMARKS,
    tuple(b.name for b in MATH_BENCHMARKS),
    MATH_PROTOCOL,
    "text",
    "Math suite of the paper's Table 1 (AIME24, AMC, MATH500, Minerva, OlympiadBench). "
    "Default protocol: greedy, 1 sample, max 3000 new tokens, qwen_math prompt, pass@1.",
)
VL_SUITE = Suite(
    "geometry",
    VL_BENCHMARKS,
    ("geometry3k",),
    VL_PROTOCOL,
    "vl",
    "Geometry3K (and MathVision) for VL checkpoints. Default protocol: temperature 0.5, "
    "16 samples per question, max 2048 new tokens, geometry prompt, mean accuracy (pass@1 over 16).",
)


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where the help text does not already say it, and not for
    an unset option (None), an off flag (False) or an empty list."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == []
        if "default" in text or unset:
            return text
        return super()._get_help_string(action)


def _data_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--data takes NAME=PATH_OR_HF_ID, got {text!r}")
    name, src = text.split("=", 1)
    return get_benchmark(name).name, src


def build_suite_parser(suite: Suite, prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=suite.description,
        formatter_class=_DefaultsHelp,
    )
    names = [b.name for b in suite.benchmarks]
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint: hub id, model folder, training checkpoint_N/ or run folder (latest checkpoint), "
        "or tiny:qwen2 / tiny:qwen2_5_vl for the random test model (not needed with --backend ground-truth)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder of this checkpoint's evaluation")
    p.add_argument("--label", default=None, help="row name in tables (default: the --out folder's name)")
    p.add_argument(
        "--benchmarks", nargs="+", default=list(suite.default_benchmarks), help=f"any of: {', '.join(names)}"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data folder (default: $MM_GMPO_DATA_DIR, else the repository's data/, shipped with the package)",
    )
    p.add_argument(
        "--data",
        type=_data_override,
        action="append",
        default=[],
        metavar="NAME=SRC",
        help="read a benchmark from another file / HF dataset id (repeatable)",
    )
    p.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark (smoke runs)")
    proto = p.add_argument_group("protocol (defaults: the paper's)")
    proto.add_argument("--temperature", type=float, default=suite.protocol.temperature, help="<= 0: greedy")
    proto.add_argument("--top-p", type=float, default=suite.protocol.top_p, help="nucleus sampling")
    proto.add_argument(
        "--n", type=int, default=suite.protocol.n, help="samples per problem (avg@n, pass@k for k<=n)"
    )
    proto.add_argument(
        "--max-new-tokens", type=int, default=suite.protocol.max_new_tokens, help="response length limit"
    )
    proto.add_argument(
        "--template", default=suite.protocol.template, help="prompt template (mm_gmpo.data.templates)"
    )
    proto.add_argument("--seed", type=int, default=suite.protocol.seed, help="sampling seed")
    proto.add_argument("--k", type=int, nargs="*", default=[], help="extra pass@k values to report (<= n)")
    proto.add_argument(
        "--truncated-wrong", action="store_true", help="a response cut at the token limit scores 0"
    )
    eng = p.add_argument_group("backend")
    eng.add_argument(
        "--backend", choices=BACKENDS, default="auto", help="auto: vLLM when usable here, else transformers"
    )
    eng.add_argument("--tp", type=int, default=1, help="vLLM tensor parallel size")
    eng.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    eng.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="problems per generate call and per jsonl append (what a crash can lose); default 32 with "
        "transformers, 512 with vLLM (which schedules its own batches)",
    )
    eng.add_argument(
        "--max-prompt-len", type=int, default=4096, help="longer prompts are refused (scored 0), never cut"
    )
    if suite.modality == "vl":
        eng.add_argument(
            "--min-pixels", type=int, default=None, help="default: EasyR1's budget (tiny models: their own)"
        )
        eng.add_argument("--max-pixels", type=int, default=None)
    p.add_argument("--score-workers", type=int, default=2, help="verifier worker processes")
    p.add_argument(
        "--score-timeout", type=float, default=10.0, help="seconds per verification before it scores 0"
    )
    p.add_argument("--force", action="store_true", help="redo benchmarks that are already finished in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _model_spec(suite: Suite, args: argparse.Namespace, backend: str, template: str) -> ModelSpec:
    """What to load, from the command line (pixel options exist only on the VL suite's parser)."""
    return ModelSpec(
        model=args.model or "ground-truth",
        modality=suite.modality,
        backend=backend,
        tensor_parallel_size=args.tp,
        dtype=args.dtype,
        batch_size=args.batch_size or (512 if backend == "vllm" else 32),
        max_prompt_len=args.max_prompt_len,
        template=template,
        min_pixels=getattr(args, "min_pixels", None),
        max_pixels=getattr(args, "max_pixels", None),
        seed=args.seed,
    )


def run_suite(suite: Suite, args: argparse.Namespace) -> int:
    """Evaluate the chosen benchmarks of a suite, then write summary.json and table.md."""
    from mm_gmpo.data.loaders import default_data_dir
    from mm_gmpo.rewards import RewardScorer

    benches = [get_benchmark(n) for n in args.benchmarks]
    wrong = [b.name for b in benches if b.modality != suite.modality]
    if wrong:
        raise SystemExit(f"error: {', '.join(wrong)} belong to another suite (this one: {suite.name})")
    backend = pick_backend(args.backend)
    if args.model is None and backend != "ground-truth":
        raise SystemExit("error: --model is required (except with --backend ground-truth)")
    protocol = suite.protocol.replace(
        temperature=args.temperature,
        top_p=args.top_p,
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        template=args.template,
        seed=args.seed,
        truncated_is_wrong=bool(args.truncated_wrong),
    )
    data_dir = args.data_dir or default_data_dir()
    overrides = dict(args.data)
    # Load every benchmark before the model: a missing file should fail in a second, not after
    # minutes of loading weights.
    loaded = {b.name: load_benchmark(b, data_dir, overrides.get(b.name), args.limit) for b in benches}
    spec = _model_spec(suite, args, backend, protocol.template)
    batch_size = spec.batch_size
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    generator = build_generator(spec, args.out)
    log.info("model ready in %.1f s (%s backend)", time.perf_counter() - t0, backend)
    results: list[BenchmarkResult] = []
    kinds = {b.kind for b in benches}
    scorers = {
        k: RewardScorer(k, timeout_s=args.score_timeout, num_workers=args.score_workers) for k in kinds
    }
    try:
        for bench in benches:
            source, records = loaded[bench.name]
            results.append(
                run_benchmark(
                    generator,
                    bench,
                    records,
                    protocol,
                    args.out,
                    scorers[bench.kind],
                    source=source,
                    model_name=spec.model,
                    backend=backend,
                    batch_size=batch_size,
                    force=args.force,
                    progress=not args.no_progress,
                    ks=tuple(args.k),
                )
            )
    except SettingsMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        for scorer in scorers.values():
            scorer.close()
    for r in results:
        state = "skipped (done)" if r.skipped else f"{r.generated_problems} problems in {r.seconds:.1f} s"
        log.info("%s: pass@1 %.1f%% (%s)", r.name, 100 * r.metrics["pass@1"], state)
    summary, table = write_run_outputs(args.out, args.label)
    print(table.read_text(encoding="utf-8"))
    print(f"predictions: {args.out}/<benchmark>.jsonl  summary: {summary}  table: {table}")
    return 0


def _main_suite(suite: Suite, prog: str, argv: list[str] | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_suite_parser(suite, prog).parse_args(argv)
    try:
        return run_suite(suite, args)
    except (ValueError, FileNotFoundError, BackendUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main_math_suite(argv: list[str] | None = None) -> int:
    return _main_suite(MATH_SUITE, "eval/math_suite.py", argv)


def main_geometry(argv: list[str] | None = None) -> int:
    return _main_suite(VL_SUITE, "eval/geometry3k.py", argv)


def build_tables_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eval/tables.py",
        description="One paper-shaped table (rows = checkpoints, columns = benchmarks + Avg.) from "
        f"evaluation folders (each written by math_suite.py / geometry3k.py; needs *.metrics.json, "
        f"writes nothing into them; {SUMMARY_FILE} / {TABLE_FILE} there are per-run).",
        formatter_class=_DefaultsHelp,
    )
    p.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        required=True,
        metavar="RUN_DIR",
        help="evaluation folders, one row each",
    )
    p.add_argument(
        "--labels", nargs="+", default=None, help="row names (default: each run's --label or folder name)"
    )
    p.add_argument("--metric", default="pass@1", help="pass@1 (= mean accuracy), avg@N, pass@K as reported")
    p.add_argument(
        "--benchmarks", nargs="+", default=None, help="columns (default: every finished benchmark)"
    )
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here too")
    return p


def main_tables(argv: list[str] | None = None) -> int:
    args = build_tables_parser().parse_args(argv)
    benches = [get_benchmark(b).name for b in args.benchmarks] if args.benchmarks else None
    try:
        table = compare(args.compare, args.labels, args.metric, benches)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table, encoding="utf-8")
    return 0
