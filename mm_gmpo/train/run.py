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
from mm_gmpo.train.progress import Progress, make_progress, note, quiet_library_bars

log = logging.getLogger("mm_gmpo")


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


def _evaluate(run: Run, when: str, step: int, announce: bool) -> float:
    """Greedy held-out accuracy, logged at ``step`` and told in one line."""
    t0 = time.perf_counter()
    result = run.trainer.evaluate(run.eval_records)
    run.logger.log(step, result)
    note(
        f"held-out accuracy {when}: {result['eval_accuracy']:.3f} "
        f"({len(run.eval_records)} prompts, {time.perf_counter() - t0:.1f} s)",
        announce,
    )
    return result["eval_accuracy"]


def _rl_steps(run: Run, progress: Progress) -> None:
    """RL steps to ``train.steps``, with periodic evaluation and checkpoints."""
    cfg, trainer = run.cfg, run.trainer
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
        run.logger.log(step, metrics)
        progress.step(step, metrics)
        if cfg.train.save_every and step % cfg.train.save_every == 0 and step < cfg.train.steps:
            trainer.save(cfg.train.output_dir)


def _write_config(cfg: Config, announce: bool) -> None:
    """The resolved config goes to the run directory; the log gets one line naming it."""
    path = Path(cfg.train.output_dir) / "config.yaml"
    path.write_text(to_yaml(cfg))
    note(f"resolved config: {path}", announce)


def train(cfg: Config) -> dict[str, Any]:
    """Run to ``train.steps`` (resuming when a checkpoint exists); returns a summary."""
    t_start = time.perf_counter()
    Path(cfg.train.output_dir).mkdir(parents=True, exist_ok=True)
    main = dist.is_main()
    announce = main and cfg.train.progress
    if announce:
        quiet_library_bars()
    note(f"building the run in {cfg.train.output_dir} (model, data, warm start)", announce)
    run = build_run(cfg)
    built_s = time.perf_counter() - t_start
    summary: dict[str, Any] = {
        "output_dir": cfg.train.output_dir,
        "resumed_from": str(run.resumed_from or ""),
    }
    try:
        if main:
            _write_config(cfg, announce)
        if run.warm_start_losses:
            summary["warm_start_loss"] = run.warm_start_losses[-1]
            steps, loss = len(run.warm_start_losses), run.warm_start_losses[-1]
            note(
                f"built in {built_s:.1f} s, warm start included ({steps} steps, last loss {loss:.3f})",
                announce,
            )
        if run.resumed_from is None and run.eval_records:
            summary["eval_accuracy_before"] = _evaluate(run, "before", 0, announce)
        progress = make_progress(announce, cfg.train.steps, run.trainer.state.step)
        try:
            _rl_steps(run, progress)
        finally:
            progress.close()
        if run.eval_records:
            summary["eval_accuracy_after"] = _evaluate(run, "after", run.trainer.state.step, announce)
        summary["checkpoint"] = str(run.trainer.save(cfg.train.output_dir))
        if main:
            summary["plot"] = str(plot_run(cfg.train.output_dir))
        summary.update(run_totals(run))
        summary["wall_time_s"] = round(time.perf_counter() - t_start, 1)
        if main:
            (Path(cfg.train.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
            log.info("%s", describe_totals(summary))
        return summary
    finally:
        run.close()
