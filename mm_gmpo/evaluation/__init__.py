"""Evaluation: reproduce the paper's benchmark tables from a checkpoint.

* :mod:`~mm_gmpo.evaluation.benchmarks`: the registry (files, verifier, paper protocol);
* :mod:`~mm_gmpo.evaluation.generators`: where responses come from (HF generate, vLLM hook,
  ground truth for the verifier ceiling);
* :mod:`~mm_gmpo.evaluation.runner`: generate -> score -> append per batch, resumable;
* :mod:`~mm_gmpo.evaluation.metrics`: pass@1 / avg@k / unbiased pass@k;
* :mod:`~mm_gmpo.evaluation.report`: summary json and markdown tables (``--compare``);
* :mod:`~mm_gmpo.evaluation.cli`: the command lines behind ``eval/*.py``.
"""

from mm_gmpo.evaluation.benchmarks import (
    BENCHMARKS,
    MATH_BENCHMARKS,
    MATH_PROTOCOL,
    VL_BENCHMARKS,
    VL_PROTOCOL,
    Benchmark,
    EvalProtocol,
    get_benchmark,
    load_benchmark,
)
from mm_gmpo.evaluation.metrics import benchmark_metrics, pass_at_k
from mm_gmpo.evaluation.report import RunSummary, collect_run, compare, markdown_table, write_run_outputs
from mm_gmpo.evaluation.runner import BenchmarkResult, SettingsMismatch, run_benchmark

__all__ = [
    "BENCHMARKS",
    "MATH_BENCHMARKS",
    "MATH_PROTOCOL",
    "VL_BENCHMARKS",
    "VL_PROTOCOL",
    "Benchmark",
    "BenchmarkResult",
    "EvalProtocol",
    "RunSummary",
    "SettingsMismatch",
    "benchmark_metrics",
    "collect_run",
    "compare",
    "get_benchmark",
    "load_benchmark",
    "markdown_table",
    "pass_at_k",
    "run_benchmark",
    "write_run_outputs",
]
