"""The run's picture: reward and the importance log-ratio range per step.

The log-ratio range is the paper's stability figure: GMPO should keep it narrower than GRPO.
"""

from __future__ import annotations

from pathlib import Path

from mm_gmpo.train.logging import read_metrics


def plot_run(output_dir: str | Path, filename: str = "training.png") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(output_dir) if "reward_mean" in r]
    steps = [r["step"] for r in rows]
    fig, (ax_r, ax_l) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_r.plot(steps, [r["reward_mean"] for r in rows], label="train reward")
    evals = [r for r in read_metrics(output_dir) if "eval_accuracy" in r]
    if evals:
        ax_r.plot(
            [r["step"] for r in evals], [r["eval_accuracy"] for r in evals], "o-", label="held-out accuracy"
        )
    ax_r.set_xlabel("step")
    ax_r.set_title("reward")
    ax_r.legend()
    ax_l.fill_between(
        steps,
        [float(r.get("log_ratio_min", 0.0)) for r in rows],
        [float(r.get("log_ratio_max", 0.0)) for r in rows],
        alpha=0.4,
        label="min..max log π/π_old",
    )
    ax_l.set_xlabel("step")
    ax_l.set_title("importance log-ratio range")
    ax_l.legend()
    fig.tight_layout()
    out = Path(output_dir) / filename
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
