"""The shared RL loop: rollout → reward → advantage → (filter) → old log-probs → K update passes.

One readable flow for the step; the loop never branches on the algorithm (the loss comes from
the registry by name) nor on the modality (the policy path collates and runs the forward).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from mm_gmpo.data.records import Record
from mm_gmpo.data.sampler import PromptSampler
from mm_gmpo.objective import compute_policy_loss, get_loss, group_advantages, zero_variance_groups
from mm_gmpo.objective.tis import tis_sequence_weights
from mm_gmpo.rollout.base import PromptInput, Rollout, RolloutEngine, SamplingSettings
from mm_gmpo.train import dist
from mm_gmpo.train.batching import padding_fraction, plan_micro_batches
from mm_gmpo.train.checkpoint import load_trainer_state, save_checkpoint, set_rng_state
from mm_gmpo.train.collate import TrainBatch, pad_ragged
from mm_gmpo.train.config import Config
from mm_gmpo.train.engine import TrainEngine
from mm_gmpo.train.logging import MetricsLogger

log = logging.getLogger("mm_gmpo")


class PolicyPath(Protocol):
    """What differs between the text and the vision-language path."""

    def build_prompt(self, record: Record) -> PromptInput: ...

    def collate(self, rollout: Rollout, rows: list[int]) -> TrainBatch: ...

    def forward(
        self, model: nn.Module, batch: TrainBatch, temperature: float, with_entropy: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def decode(self, rollout: Rollout) -> list[str]: ...


# (responses, records, truncated) -> (rewards, accuracy, extra counters)
ScoreFn = Callable[[list[str], list[Record], list[bool]], tuple[list[float], list[float], dict[str, float]]]


@dataclass
class LoopState:
    """What a checkpoint must restore besides weights and optimizer."""

    step: int = 0
    skipped_records: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def chunks(rows: list[int], size: int) -> list[list[int]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def split_even(rows: list[int], parts: int, group: int) -> list[list[int]]:
    """Cut rows into ``parts`` pieces on group boundaries (sizes differ by at most a group)."""
    groups = chunks(rows, group)
    out: list[list[int]] = []
    for p in range(parts):
        lo, hi = (p * len(groups)) // parts, ((p + 1) * len(groups)) // parts
        piece = [r for g in groups[lo:hi] for r in g]
        if piece:
            out.append(piece)
    return out


class Trainer:
    """Runs RL steps; owns the data position and the per-step metrics."""

    def __init__(
        self,
        cfg: Config,
        *,
        path: PolicyPath,
        engine: TrainEngine,
        rollout_engine: RolloutEngine,
        score: ScoreFn,
        train_records: list[Record],
        stop_token_ids: list[int],
        logger: MetricsLogger | None = None,
        tokenizer: Any = None,
    ) -> None:
        self.cfg = cfg
        self.path = path
        self.engine = engine
        self.rollout_engine = rollout_engine
        self.score = score
        self.records = train_records
        self.tokenizer = tokenizer
        self.logger = logger
        self.rank, self.world = dist.rank(), dist.world_size()
        if cfg.train.prompts_per_step % self.world != 0:
            raise ValueError(
                f"train.prompts_per_step={cfg.train.prompts_per_step} must divide by the {self.world} ranks"
            )
        self.sampler = PromptSampler(len(train_records), cfg.train.prompts_per_step, seed=cfg.train.seed)
        self.state = LoopState()
        self.sampling = SamplingSettings(
            n=cfg.rollout.n,
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens,
            stop_token_ids=tuple(stop_token_ids),
        )
        spec_std = cfg.loss.adv_std_normalize
        self.adv_std = (cfg.loss.name != "dr_grpo") if spec_std is None else spec_std
        self.loss_unit = get_loss(cfg.loss.name).unit

    # ------------------------------------------------------------ prompts
    def _prompts_for(
        self, records: list[Record], strict: bool
    ) -> tuple[list[PromptInput], list[Record], int]:
        """Prompts for the records that make one; a bad record raises (strict) or is counted."""
        prompts, kept, skipped = [], [], 0
        for record in records:
            try:
                prompts.append(self.path.build_prompt(record))
                kept.append(record)
            except ValueError as exc:
                if strict:
                    raise
                skipped += 1
                log.warning("skipping record: %s", exc)
        return prompts, kept, skipped

    # ------------------------------------------------------------ one RL step
    def rl_step(self) -> dict[str, float]:
        cfg, t0 = self.cfg, time.perf_counter()
        model = self.engine.unwrapped_model()
        device = next(model.parameters()).device
        per_rank = cfg.train.prompts_per_step // self.world
        indices = self.sampler.next_batch()[self.rank * per_rank : (self.rank + 1) * per_rank]
        strict = cfg.data.on_bad_record == "error"
        prompts, records, skipped = self._prompts_for([self.records[i] for i in indices], strict)
        self.state.skipped_records += skipped

        # 1. rollout (groups of n contiguous rows)
        self.rollout_engine.wake()
        rollout = (
            self.rollout_engine.generate(prompts, self.sampling) if prompts else Rollout([], [], [], [], [])
        )
        self.rollout_engine.sleep()
        t_gen = time.perf_counter() - t0

        # 2. rewards and group advantages
        texts = self.path.decode(rollout)
        sample_records = [records[i] for i in rollout.prompt_index]
        rewards_l, acc_l, counters = (
            self.score(texts, sample_records, rollout.truncated) if texts else ([], [], {})
        )
        n = cfg.rollout.n
        rewards = torch.tensor(rewards_l, dtype=torch.float32)  # [N]
        advantages = (
            group_advantages(rewards, n, normalize_std=self.adv_std) if len(rewards) else rewards
        )  # [N]
        zero_var = zero_variance_groups(rewards, n) if len(rewards) else torch.zeros(0, dtype=torch.bool)
        rows = list(range(len(rollout)))
        if cfg.loss.filter_zero_variance:
            rows = [r for r in rows if not bool(zero_var[r // n])]

        # 3. old-policy log-probs, recomputed by the trainer on the exact training collation.
        # With one optimizer step per rollout batch every micro-batch of the update sees the
        # weights that sampled, so its own forward (detached) is π_old and this pass is skipped.
        old_logp: dict[int, torch.Tensor] = {}
        mismatch = []
        tis_w = torch.ones(len(rollout))  # [N] per-sequence sampler-mismatch weights (1: off)
        reuse_update = (
            cfg.train.reuse_update_logp and cfg.train.ppo_epochs == 1 and cfg.train.mini_batches == 1
        )

        def keep_old(micro: list[int], logp: torch.Tensor) -> None:
            """Store π_old per row (logp [b, R]) with its sampler mismatch and TIS weight."""
            host = logp.detach().float().cpu()  # [b, R] one device-to-host copy per micro-batch
            for j, r in enumerate(micro):
                length = len(rollout.response_ids[r])
                old_logp[r] = host[j, :length]  # [len_r]
                sampler = torch.tensor(rollout.sampler_logp[r][:length])
                mismatch.append((old_logp[r] - sampler).abs())
                if cfg.loss.tis_cap > 0:
                    tis_w[r] = tis_sequence_weights(
                        old_logp[r][None], sampler[None], torch.ones(1, length), cfg.loss.tis_cap
                    )[0]

        prompt_lens = [len(p) for p in rollout.prompt_ids]
        response_lens = [len(r) for r in rollout.response_ids]

        def plan(part: list[int]) -> list[list[int]]:
            """Micro-batches of ``part``: fixed size, or packed under train.micro_batch_tokens."""
            t = cfg.train
            return plan_micro_batches(
                part, prompt_lens, response_lens, t.micro_batch_size, t.micro_batch_tokens
            )

        if not reuse_update:
            with torch.no_grad():
                for micro in plan(rows):
                    batch = self.path.collate(rollout, micro).to(device)
                    logp, _ = self.path.forward(
                        self.engine.module, batch, cfg.rollout.temperature, with_entropy=False
                    )
                    keep_old(micro, logp)

        # 4. K passes of mini-batch updates
        sums: dict[str, float] = defaultdict(float)
        mins: dict[str, float] = {}
        maxs: dict[str, float] = {}
        n_micro, opt_stats, update_micros = 0, [], []
        self.engine.module.train()
        for _epoch in range(cfg.train.ppo_epochs):
            for mini in split_even(rows, cfg.train.mini_batches, n) if rows else []:
                units = float(
                    len(mini)
                    if self.loss_unit == "sequence"
                    else sum(len(rollout.response_ids[r]) for r in mini)
                )
                denom = dist.all_reduce_sum(units) / self.world
                micros = plan(mini)
                update_micros += micros
                for micro in micros:
                    batch = self.path.collate(rollout, micro).to(device)
                    logp, entropy = self.path.forward(self.engine.module, batch, cfg.rollout.temperature)
                    if reuse_update:
                        keep_old(micro, logp)  # for the sampler-mismatch metric and TIS
                        old = logp.detach()  # [b, R] this forward is π_old
                    else:
                        width = batch.response_ids.shape[1]
                        old = pad_ragged([old_logp[r].tolist() for r in micro], width).to(device)  # [b, R]
                    loss, m = compute_policy_loss(
                        cfg.loss.name,
                        logp,
                        old,
                        (advantages[micro] * tis_w[micro]).to(device),
                        batch.response_mask,
                        clip_low=cfg.loss.clip_low,
                        clip_high=cfg.loss.clip_high,
                        max_len=cfg.rollout.max_new_tokens,
                        denominator=denom,
                        entropy=entropy,
                    )
                    self.engine.backward(loss)
                    n_micro += 1
                    for k, v in m.items():
                        v = float(v)
                        if k == "log_ratio_min":
                            mins[k] = min(mins.get(k, v), v)
                        elif k == "log_ratio_max":
                            maxs[k] = max(maxs.get(k, v), v)
                        else:
                            sums[k] += v
                opt_stats.append(self.engine.step())
        self.rollout_engine.sync_weights(self.engine.unwrapped_model())

        # 5. metrics
        lengths = [len(r) for r in rollout.response_ids]
        metrics: dict[str, float] = {
            "reward_mean": float(rewards.mean()) if len(rewards) else 0.0,
            "accuracy": sum(acc_l) / max(1, len(acc_l)),
            "response_length": sum(lengths) / max(1, len(lengths)),
            "truncated_frac": sum(rollout.truncated) / max(1, len(rollout)),
            "zero_variance_groups": float(zero_var.float().mean()) if len(zero_var) else 0.0,
            "rows_trained": float(len(rows)),
            "padding_frac": padding_fraction(update_micros, prompt_lens, response_lens),
            "skipped_records": float(self.state.skipped_records),
            "sampler_logp_absdiff_mean": float(torch.cat(mismatch).mean()) if mismatch else 0.0,
            "sampler_logp_absdiff_max": float(torch.cat(mismatch).max()) if mismatch else 0.0,
            "time_generate_s": t_gen,
        }
        metrics.update({f"counter/{k}": float(v) for k, v in counters.items()})
        metrics.update({k: v / max(1, n_micro) for k, v in sums.items()})
        metrics.update(mins)
        metrics.update(maxs)
        if opt_stats:
            metrics["grad_norm"] = sum(s["grad_norm"] for s in opt_stats) / len(opt_stats)
            metrics["lr"] = opt_stats[-1]["lr"]
        if cfg.loss.tis_cap > 0 and rows:
            metrics["tis_seq_weight_mean"] = float(tis_w[rows].mean())
        metrics.update(getattr(self.rollout_engine, "metrics", dict)())
        metrics["time_step_s"] = time.perf_counter() - t0
        self.state.step += 1
        return metrics

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, records: list[Record], max_new_tokens: int | None = None) -> dict[str, float]:
        """Greedy accuracy on held-out records (one response each)."""
        if not records:
            return {}
        prompts, kept, skipped = self._prompts_for(records, strict=False)
        greedy = SamplingSettings(
            n=1,
            temperature=0.0,
            max_new_tokens=max_new_tokens or self.sampling.max_new_tokens,
            stop_token_ids=self.sampling.stop_token_ids,
        )
        rollout = self.rollout_engine.generate(prompts, greedy)
        texts = self.path.decode(rollout)
        _, acc, _ = self.score(texts, [kept[i] for i in rollout.prompt_index], rollout.truncated)
        return {"eval_accuracy": sum(acc) / max(1, len(acc)), "eval_skipped": float(skipped)}

    # ------------------------------------------------------------ checkpoints
    def save(self, output_dir: str | Path) -> Path:
        return save_checkpoint(
            output_dir,
            self.state.step,
            model=self.engine.unwrapped_model(),
            tokenizer=self.tokenizer,
            engine=self.engine,
            trainer_state={
                "sampler": self.sampler.state_dict(),
                "skipped_records": self.state.skipped_records,
                "extra": self.state.extra,
            },
            keep=self.cfg.train.keep_checkpoints,
            is_main=dist.is_main(),
        )

    def restore(self, checkpoint: str | Path) -> None:
        """Optimizer, data position and RNGs (the weights were loaded with the model)."""
        state = load_trainer_state(checkpoint)
        self.engine.load_state(Path(checkpoint) / "engine")
        self.sampler.load_state_dict(state["sampler"])
        self.state = LoopState(state["step"], state.get("skipped_records", 0), state.get("extra", {}))
        set_rng_state(state["rng"])
