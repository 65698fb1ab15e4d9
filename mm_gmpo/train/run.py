"""``mm-gmpo train``: build the run, warm-start if asked, RL steps with checkpoints, evaluate."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from mm_gmpo.train import dist
from mm_gmpo.train.build import Run, build_run
from mm_gmpo.train.config import Config, to_yaml
from mm_gmpo.train.plots import plot_run

log = logging.getLogger("mm_gmpo")


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]GMPO"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def run_totals(run: Run) -> dict[str, Any]:
    """The run's totals over all ranks and (when resumed) the whole run: what it trained on,
    what it skipped and why, and what it could not score in time."""
    state = run.trainer.state
    return {
        "steps": state.step,
        "rows_trained": state.rows_trained,
        # Training records the policy path refused (bad image, over-long prompt, ...), by reason.
        "skipped_records_by_reason": dict(sorted(state.refused.items())),
        # Rows the loaders dropped (malformed line, no answer, ...), by file field and reason.
        "skipped_rows_at_load": run.load_skips,
        "verifier_timeouts": state.verifier_timeouts,
        "steps_without_signal": state.steps_without_signal,
    }


def describe_totals(summary: dict[str, Any]) -> str:
    """One line for the end of the log."""
    refused = summary["skipped_records_by_reason"]
    at_load = {
        f"{k} {r}": n for k, reasons in summary["skipped_rows_at_load"].items() for r, n in reasons.items()
    }
    skipped = ", ".join(f"{r}: {n}" for r, n in {**at_load, **refused}.items()) or "none"
    return (
        f"trained {summary['rows_trained']} rows in {summary['steps']} steps; skipped: {skipped}; "
        f"verifier time-outs: {summary['verifier_timeouts']}; steps with no reward spread: "
        f"{summary['steps_without_signal']}"
    )


def train(cfg: Config) -> dict[str, Any]:
    """Run to ``train.steps`` (resuming when a checkpoint exists); returns a summary."""
    t_start = time.perf_counter()
    Path(cfg.train.output_dir).mkdir(parents=True, exist_ok=True)
    run = build_run(cfg)
    if dist.is_main():
        resolved = to_yaml(cfg)
        (Path(cfg.train.output_dir) / "config.yaml").write_text(resolved)
        log.info("resolved config:\n%s", resolved)
    trainer, logger = run.trainer, run.logger
    summary: dict[str, Any] = {
        "output_dir": cfg.train.output_dir,
        "resumed_from": str(run.resumed_from or ""),
    }
    try:
        if run.warm_start_losses:
            summary["warm_start_loss"] = run.warm_start_losses[-1]
        if run.resumed_from is None:
            if run.eval_records:
                before = trainer.evaluate(run.eval_records)
                logger.log(0, before)
                summary["eval_accuracy_before"] = before["eval_accuracy"]
        main = dist.is_main()
        with _progress(cfg.train.progress and main) as bar:
            task = bar.add_task("train", total=cfg.train.steps, completed=trainer.state.step, info="")
            while trainer.state.step < cfg.train.steps:
                metrics = trainer.rl_step()
                step = trainer.state.step
                if (
                    cfg.train.eval_every
                    and step % cfg.train.eval_every == 0
                    and run.eval_records
                    and step < cfg.train.steps
                ):
                    metrics.update(trainer.evaluate(run.eval_records))
                logger.log(step, metrics)
                bar.update(
                    task,
                    advance=1,
                    info=(
                        f"reward {metrics['reward_mean']:.3f}  acc {metrics['accuracy']:.3f}  "
                        f"len {metrics['response_length']:.0f}  {metrics['time_step_s']:.1f}s/step"
                    ),
                )
                if cfg.train.save_every and step % cfg.train.save_every == 0 and step < cfg.train.steps:
                    trainer.save(cfg.train.output_dir)
        if run.eval_records:
            after = trainer.evaluate(run.eval_records)
            logger.log(trainer.state.step, after)
            summary["eval_accuracy_after"] = after["eval_accuracy"]
        summary["checkpoint"] = str(trainer.save(cfg.train.output_dir))
        if dist.is_main():
            summary["plot"] = str(plot_run(cfg.train.output_dir))
        summary.update(run_totals(run))
        summary["wall_time_s"] = round(time.perf_counter() - t_start, 1)
        if dist.is_main():
            (Path(cfg.train.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
            log.info("%s", describe_totals(summary))
        return summary
    finally:
        run.close()
