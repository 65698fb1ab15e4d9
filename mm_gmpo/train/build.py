"""Assemble a run from its config: model, tokenizer, data, path, engines, scorer, trainer.

Kept apart from the loop so the loop stays one readable flow and tests can build a trainer
from a config in one call.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from mm_gmpo.data.loaders import LoadResult
from mm_gmpo.data.records import BadRecordError, Record
from mm_gmpo.dtypes import resolve_dtype
from mm_gmpo.hub import SourceError, check_model_dir
from mm_gmpo.lora import adapter_base_dir, adapters_disabled, is_adapter_dir, lora_enabled
from mm_gmpo.policy_paths import PathParts, build_policy_path, check_policy_path, load_policy_model
from mm_gmpo.saving import save_pretrained
from mm_gmpo.train import dist
from mm_gmpo.train.config import Config, ConfigError, validate_world
from mm_gmpo.train.engine import OptimSettings, TorchEngine, TrainEngine
from mm_gmpo.train.logging import MetricsLogger
from mm_gmpo.train.loop import ScoreFn, Trainer
from mm_gmpo.train.resume import checkpoint_step, pick_resume
from mm_gmpo.train.warm_start import warm_start

log = logging.getLogger("mm_gmpo")


def resolve_model_path(cfg: Config) -> Path | str:
    """A ``tiny:*`` model is built (seeded) under the run's directory; a local directory must be
    a saved model and a hub id reachable or cached (:mod:`mm_gmpo.hub`, seconds, nothing loaded)."""
    spec = cfg.model.path
    if not spec.startswith("tiny:"):
        return check_model_dir(spec, "model.path")
    from mm_gmpo.testing import build_tiny_qwen2, build_tiny_qwen2_5_vl

    kind = spec.split(":", 1)[1]
    builders = {"qwen2": build_tiny_qwen2, "qwen2_5_vl": build_tiny_qwen2_5_vl}
    if kind not in builders:
        raise ConfigError(f"model.path: unknown tiny model {spec!r}; use tiny:qwen2 or tiny:qwen2_5_vl")
    out = Path(cfg.train.output_dir) / "tiny_model"
    if dist.is_main() and not (out / "config.json").exists():
        builders[kind](out, seed=cfg.train.start_seed, **cfg.model.tiny_overrides)
    dist.barrier()
    return out


def load_split(source: str, cfg: Config, split: str) -> list[Record]:
    """Records from a file / HF id, or the built-in synthetic task."""
    return load_split_report(source, cfg, split).records


def load_split_report(source: str, cfg: Config, split: str) -> LoadResult:
    """:func:`load_split` with the rows skipped by reason; errors name the field (``data.train``)."""
    if source.startswith("synthetic:"):
        records = _synthetic_split(source, cfg, split)
        return LoadResult(records, n_rows=len(records))
    from mm_gmpo.data.loaders import load_records_with_report

    field = f"data.{split}"
    try:
        result = load_records_with_report(
            source,
            question_key=cfg.data.question_key,
            answer_key=cfg.data.answer_key,
            on_bad_record=cfg.data.on_bad_record,
        )
    except (FileNotFoundError, SourceError) as exc:
        raise type(exc)(f"{field}: {exc}") from None
    if not result.records:
        raise BadRecordError(
            f"{field}={source}: no usable record in {result.n_rows} rows "
            f"(skipped: {dict(result.skipped) or 'none'})",
            "no_usable_records",
        )
    return result


def _synthetic_split(source: str, cfg: Config, split: str) -> list[Record]:
    """The built-in synthetic tasks (``synthetic:largest``, ...)."""
    from mm_gmpo.data.synthetic import (
        make_arithmetic_records,
        make_comparison_records,
        make_largest_records,
        make_sorted_records,
    )
    from mm_gmpo.data.synthetic_vl import make_square_records

    makers = {
        "arithmetic": make_arithmetic_records,
        "compare": make_comparison_records,
        "largest": make_largest_records,
        "sorted": make_sorted_records,  # multi-token answers: the stability study's second text task
        "squares": make_square_records,  # VL: count the squares in a picture
    }
    task = source.split(":", 1)[1]
    if task not in makers:
        raise ConfigError(f"data.{split}: unknown synthetic task {source!r} (known: {', '.join(makers)})")
    size = cfg.data.synthetic_train_size if split == "train" else cfg.data.synthetic_eval_size
    return makers[task](size, seed=cfg.train.start_seed, split="train" if split == "train" else "test")


def make_score_fn(cfg: Config) -> tuple[ScoreFn, Any]:
    """The batch scorer as the loop calls it; returns the scorer too so it can be closed."""
    from mm_gmpo.rewards import RewardScorer, RewardWeights

    weights = (
        RewardWeights(accuracy=cfg.reward.accuracy_weight, format=cfg.reward.format_weight)
        if cfg.reward.kind == "geometry"
        else None
    )
    scorer = RewardScorer(
        kind=cfg.reward.kind,
        timeout_s=cfg.reward.timeout_s,
        num_workers=cfg.reward.num_workers,
        weights=weights,
    )

    def score(texts: list[str], records: list[Record], truncated: list[bool]):
        result = scorer.score(texts, records, truncated=truncated)
        counters = {"timeouts": float(result.num_timeouts), "errors": float(result.num_errors)}
        return list(result.rewards), list(result.accuracy), counters

    return score, scorer


def optim_settings(cfg: Config) -> OptimSettings:
    total_updates = max(1, cfg.train.steps * cfg.train.ppo_epochs * cfg.train.mini_batches)
    return OptimSettings(
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        betas=(float(cfg.optim.betas[0]), float(cfg.optim.betas[1])),
        grad_clip=cfg.optim.grad_clip,
        scheduler=cfg.optim.scheduler,
        warmup_steps=cfg.optim.warmup_steps,
        total_steps=total_updates,
    )


def build_engine(cfg: Config, model: torch.nn.Module) -> TrainEngine:
    """The training engine, given every engine setting the config has.

    ``model.gradient_checkpointing`` is applied by the engine for both engines (one form that
    works under ZeRO-3); ``train.zero_stage``, ``train.offload`` and bf16 (from ``model.dtype``)
    reach DeepSpeed's config.
    """
    settings = optim_settings(cfg)
    checkpointing = cfg.model.gradient_checkpointing
    if cfg.train.engine == "torch":
        if dist.world_size() > 1:
            raise ConfigError(
                "train.engine=torch runs in one process; use train.engine=deepspeed with torchrun"
            )
        return TorchEngine(model, settings, gradient_checkpointing=checkpointing)
    from mm_gmpo.train.ds_engine import DeepSpeedEngine

    return DeepSpeedEngine(
        model,
        settings,
        zero_stage=cfg.train.zero_stage,
        bf16=resolve_dtype(cfg.model.dtype) == torch.bfloat16,
        gradient_checkpointing=checkpointing,
        offload=cfg.train.offload,
    )


def build_rollout_engine(cfg: Config, engine: TrainEngine, parts: PathParts, model_dir: str | Path) -> Any:
    """transformers ``generate`` on the training weights, or a colocated vLLM engine."""
    if cfg.rollout.engine == "vllm":
        from mm_gmpo.rollout.vllm import build_vllm_engine

        return build_vllm_engine(cfg, model_dir, parts.tokenizer, parts.path.vllm_requests())
    from mm_gmpo.rollout.hf import HFGenerateEngine

    return HFGenerateEngine(
        engine.unwrapped_model(),
        parts.path.pad_id,
        batch_size=cfg.rollout.batch_size,
        weights_context=engine.gathered_for_generation,
        collate=parts.generate_collate,
    )


WARM_START_BASE = "warm_start_model"


def with_lora_after_warm_start(
    cfg: Config, model: torch.nn.Module, saveable: Any, warm_started: bool
) -> torch.nn.Module:
    """A fresh run's policy with its LoRA adapters (``model.lora_rank > 0``), else ``model``.

    The supervised warm start (demos) builds the starting policy, so it trains the whole model,
    as without LoRA; that model is then the adapters' base: saved once under
    ``output_dir/warm_start_model`` (the adapter checkpoints name it, so resume, ``eval`` and
    ``export --merge`` load it) and the KL reference (adapters disabled).
    """
    from mm_gmpo.lora import apply_lora

    if not lora_enabled(cfg):
        return model
    if warm_started:
        base = (Path(cfg.train.output_dir) / WARM_START_BASE).resolve()
        if dist.is_main():
            save_pretrained(model, base, safe_serialization=True)
            saveable.save_pretrained(base)
        dist.barrier()
        model.name_or_path = str(base)
    return apply_lora(cfg, model)


def build_reference(
    cfg: Config, engine: TrainEngine, model_dir: str | Path | None
) -> tuple[torch.nn.Module | None, Callable[[], AbstractContextManager] | None]:
    """The KL reference (``loss.kl_coef > 0``) and the context its forward runs in.

    Full fine-tuning: the starting policy (never a checkpoint), loaded again and sharded like
    the policy. LoRA: the policy itself with its adapters disabled, which is exactly the
    starting policy and costs no second copy of the weights.
    """
    if cfg.loss.kl_coef <= 0:
        return None, None
    if lora_enabled(cfg):
        return engine.module, partial(adapters_disabled, engine.unwrapped_model())
    return engine.prepare_reference(load_policy_model(cfg, model_dir)), None


def engine_weights_dir(load_from: str | Path) -> str | Path:
    """Where a separate rollout engine (vLLM) reads its starting weights: a LoRA checkpoint's
    base model (the adapter reaches it through ``sync_weights``), else ``load_from`` itself."""
    return adapter_base_dir(load_from) if is_adapter_dir(load_from) else load_from


@dataclass
class Run:
    """Everything a training run holds, for the CLI, the demo and tests."""

    cfg: Config
    trainer: Trainer
    tokenizer: Any
    eval_records: list[Record]
    scorer: Any
    logger: MetricsLogger
    resumed_from: Path | None
    # Env vars and process group this run created for a plain single-process run: undone on
    # close so a later run (or test) in the same process starts from a clean slate.
    owned_env: tuple[str, ...] = ()
    owns_group: bool = False

    warm_start_losses: list[float] = field(default_factory=list)
    # Rows the loaders skipped (data.on_bad_record=skip), by field and reason.
    load_skips: dict[str, dict[str, int]] = field(default_factory=dict)

    def close(self) -> None:
        self.logger.close()
        if hasattr(self.scorer, "close"):
            self.scorer.close()
        if hasattr(self.trainer.rollout_engine, "close"):
            self.trainer.rollout_engine.close()  # vLLM: before the process group goes (see VLLMEngine.close)
        if self.owns_group:
            _release_group(self.owned_env)


def check_packages(cfg: Config) -> None:
    """The engines and the policy path the config names can be imported (before anything loads)."""
    needed = {"train.engine=deepspeed": "deepspeed"} if cfg.train.engine == "deepspeed" else {}
    if cfg.rollout.engine == "vllm":
        needed["rollout.engine=vllm"] = "vllm"
    if lora_enabled(cfg):
        needed[f"model.lora_rank={cfg.model.lora_rank}"] = "peft"
    for setting, package in needed.items():
        if importlib.util.find_spec(package) is None:
            raise ConfigError(f"{setting} needs the {package} package, which is not installed here")
    check_policy_path(cfg.modality)


def build_run(cfg: Config) -> Run:
    """Checks first (packages, output_dir, data, model source: seconds, nothing loaded), then the
    model, the warm start (before the engine wraps the model), engines, scorer and logger.

    A failure undoes the process group and environment this call set up, so the caller (or the
    next test in the same process) starts clean.
    """
    owns_group = not dist.is_initialized()
    env_before = set(os.environ)
    dist.init_distributed()
    owned_env = tuple(sorted(set(os.environ) - env_before))
    try:
        return _build_run(cfg, owned_env, owns_group)
    except BaseException:
        if owns_group:
            _release_group(owned_env)
        raise


def _build_run(cfg: Config, owned_env: tuple[str, ...], owns_group: bool) -> Run:
    validate_world(cfg, dist.world_size())
    torch.manual_seed(cfg.train.seed)
    check_packages(cfg)
    resume = pick_resume(cfg)
    train_data = load_split_report(cfg.data.train, cfg, "train")
    eval_data = load_split_report(cfg.data.eval, cfg, "eval") if cfg.data.eval else None
    # model.path is loaded for a fresh start and for a separate KL reference; a resume needs only
    # its checkpoint (a LoRA checkpoint names its base model itself).
    separate_reference = cfg.loss.kl_coef > 0 and not lora_enabled(cfg)
    model_dir = resolve_model_path(cfg) if resume is None or separate_reference else None
    load_from = (resume / "model") if resume is not None else model_dir
    # A fresh LoRA run gets its adapters after the warm start (see with_lora_after_warm_start).
    parts = build_policy_path(cfg, load_from, adapters=resume is not None)
    stops = stop_token_ids(parts.tokenizer, parts.model)
    model = _placed(parts.model)
    warm_losses = []
    if resume is None:
        strict = cfg.data.on_bad_record == "error"
        args = (model, parts.path, parts.tokenizer, train_data.records, stops[0], cfg.warm_start)
        warm_losses = warm_start(*args, seed=cfg.train.start_seed, strict=strict)
        model = parts.model = with_lora_after_warm_start(cfg, model, parts.saveable, bool(warm_losses))
    engine = build_engine(cfg, model)
    reference, reference_context = build_reference(cfg, engine, model_dir)
    rollout = build_rollout_engine(cfg, engine, parts, engine_weights_dir(load_from))
    score, scorer = make_score_fn(cfg)
    eval_records = eval_data.records if eval_data is not None else []
    if cfg.data.eval_limit:
        eval_records = eval_records[: cfg.data.eval_limit]
    logger = MetricsLogger(
        cfg.train.output_dir,
        tensorboard=cfg.train.log_tensorboard,
        wandb=cfg.train.log_wandb,
        config=cfg.to_dict(),
        resume_step=0 if resume is None else checkpoint_step(resume),
        enabled=dist.is_main(),
    )
    trainer = Trainer(
        cfg,
        path=parts.path,
        engine=engine,
        rollout_engine=rollout,
        score=score,
        train_records=train_data.records,
        stop_token_ids=stops,
        tokenizer=parts.tokenizer,
        saveable=parts.saveable,
        reference=reference,
        reference_context=reference_context,
    )
    if resume is not None:
        trainer.restore(resume)
    load_skips = {"data.train": dict(train_data.skipped)}
    if eval_data is not None:
        load_skips["data.eval"] = dict(eval_data.skipped)
    return Run(
        cfg,
        trainer,
        parts.saveable,
        eval_records,
        scorer,
        logger,
        resume,
        owned_env,
        owns_group,
        warm_start_losses=warm_losses,
        load_skips=load_skips,
    )


def _release_group(owned_env: tuple[str, ...]) -> None:
    """Undo what :func:`build_run` set up for a single-process run."""
    if dist.world_size() == 1:
        dist.shutdown()
        for key in owned_env:
            os.environ.pop(key, None)


def _placed(model: torch.nn.Module) -> torch.nn.Module:
    """On this rank's GPU when there is one (the engines take the model where it is)."""
    return model.to(f"cuda:{dist.local_rank()}") if torch.cuda.is_available() else model


def stop_token_ids(tokenizer, model) -> list[int]:
    """End-of-sequence ids: the generation config's, plus <|im_end|> / <|endoftext|> when known."""
    ids: list[int] = []
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids.extend(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    for tok in ("<|im_end|>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.append(tid)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    out = sorted(set(ids))
    if not out:
        raise ValueError("no end-of-sequence token found in the tokenizer or generation config")
    return out
