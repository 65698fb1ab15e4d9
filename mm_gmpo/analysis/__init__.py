"""Analysis of finished runs: multi-run overlay figures and the GMPO-vs-GRPO stability study."""

from mm_gmpo.analysis.plots import load_runs, plot_runs, run_label

__all__ = ["load_runs", "plot_runs", "run_label"]
