"""``mm-gmpo train``: build the run, warm-start if asked, RL steps with checkpoints, evaluate."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from mm_gmpo.train import dist
from mm_gmpo.train.build import build_run
from mm_gmpo.train.config import Config, to_yaml, validate_world
from mm_gmpo.train.plots import plot_run
from mm_gmpo.train.warm_start import warm_start

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


def train(cfg: Config) -> dict[str, Any]:
    """Run to ``train.steps`` (resuming when a checkpoint exists); returns a summary."""
    t_start = time.perf_counter()
    Path(cfg.train.output_dir).mkdir(parents=True, exist_ok=True)
    run = build_run(cfg)
    validate_world(cfg, dist.world_size())
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
        if run.resumed_from is None:
            losses = warm_start(
                trainer,
                cfg.warm_start.steps,
                cfg.warm_start.lr,
                cfg.warm_start.batch_size,
                cfg.train.start_seed,
            )
            if losses:
                summary["warm_start_loss"] = losses[-1]
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
        summary["steps"] = trainer.state.step
        # Records the policy path refused (bad image, over-long prompt, ...), by reason.
        summary["skipped_records_by_reason"] = dict(trainer.path.bad_records)
        summary["wall_time_s"] = round(time.perf_counter() - t_start, 1)
        if dist.is_main():
            (Path(cfg.train.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        run.close()
