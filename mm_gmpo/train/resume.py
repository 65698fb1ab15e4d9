"""Which checkpoint a run starts from, and never two different runs mixed in one output_dir.

``train.resume`` left unset continues the newest checkpoint only when ``output_dir`` holds this
same run: its saved ``config.yaml`` (written at the start of every run) matches the new
resolved config, apart from the bookkeeping fields below. A different config over an earlier
run's checkpoints or metrics is an error, because continuing would silently train the old run
further (and overwrite its metrics) under settings nobody chose. Saying ``train.resume``
explicitly (``auto``, ``never`` or a checkpoint path, in the YAML or on the command line) is
the user's decision and is followed. Whenever a checkpoint is picked, one line says which and
at which step.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from mm_gmpo.train import dist
from mm_gmpo.train.checkpoint import COMPLETE, latest_checkpoint
from mm_gmpo.train.config import Config, ConfigError

log = logging.getLogger("mm_gmpo")

SAVED_CONFIG = "config.yaml"
# Fields that change how a run is watched or saved, not what it trains: they may differ on resume.
BOOKKEEPING = {
    "train.resume",
    "train.progress",
    "train.log_tensorboard",
    "train.log_wandb",
    "train.save_every",
    "train.keep_checkpoints",
    "train.eval_every",
    "reward.num_workers",
}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "tiny_overrides":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict[str, Any], cfg: Config) -> list[str]:
    """``field: old -> new`` for every field (bookkeeping aside) that differs from ``saved``."""
    old, new = _flatten(saved), _flatten(cfg.to_dict())
    keys = sorted((set(old) | set(new)) - BOOKKEEPING)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def _holds_a_run(output_dir: Path) -> bool:
    return latest_checkpoint(output_dir) is not None or (output_dir / "metrics.jsonl").is_file()


def _refuse_a_different_run(cfg: Config, output_dir: Path) -> None:
    saved_path = output_dir / SAVED_CONFIG
    if not saved_path.is_file() or not _holds_a_run(output_dir):
        return
    try:
        saved = yaml.safe_load(saved_path.read_text()) or {}
    except yaml.YAMLError:
        saved = {}
    changes = config_changes(saved, cfg) if isinstance(saved, dict) else ["(unreadable)"]
    if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise ConfigError(
            f"train.output_dir={output_dir} holds a run with a different config ({shown}); "
            "pass train.resume=auto to continue it anyway, train.resume=never to start over, "
            "or choose another train.output_dir"
        )


def pick_resume(cfg: Config) -> Path | None:
    """The checkpoint this run continues, or None to start from ``model.path``."""
    resume, output_dir = cfg.train.resume, Path(cfg.train.output_dir)
    if resume == "never":
        return None
    if resume is None:
        _refuse_a_different_run(cfg, output_dir)
    checkpoint = latest_checkpoint(output_dir) if resume in (None, "auto") else Path(resume)
    if checkpoint is not None and not (checkpoint / COMPLETE).is_file():
        raise ConfigError(
            f"train.resume={resume}: not a complete checkpoint (a checkpoints/step_N directory "
            f"with a {COMPLETE} marker)"
        )
    if checkpoint is not None and dist.is_main():
        how = "train.resume unset, same config" if resume is None else f"train.resume={resume}"
        log.warning(
            "resuming from checkpoint %s at step %d of %d (%s)",
            checkpoint,
            checkpoint_step(checkpoint),
            cfg.train.steps,
            how,
        )
    return checkpoint


def checkpoint_step(checkpoint: Path) -> int:
    """The step a checkpoint directory (``step_00000012``) was saved at."""
    return int(checkpoint.name.split("_")[-1])
