"""The shared RL loop: rollout → reward → advantage → (filter) → old log-probs → K update passes.

One readable flow for the step (:meth:`Trainer.rl_step`, an outline of named steps); the loop
never branches on the algorithm (the loss and its advantage normalisation come from the
registry by name) nor on the modality (the policy path collates and runs the forward).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mm_gmpo.data.records import BadRecordError, Record
from mm_gmpo.data.sampler import PromptSampler
from mm_gmpo.objective import compute_policy_loss, get_loss, group_advantages, zero_variance_groups
from mm_gmpo.objective.metrics import reduce_metrics
from mm_gmpo.objective.tis import tis_sequence_weights
from mm_gmpo.policy_paths import PolicyPath
from mm_gmpo.rollout.base import PromptInput, Rollout, RolloutEngine, SamplingSettings
from mm_gmpo.train import dist
from mm_gmpo.train.batching import padding_fraction, plan_micro_batches
from mm_gmpo.train.checkpoint import load_trainer_state, save_checkpoint, set_rng_state
from mm_gmpo.train.collate import pad_ragged
from mm_gmpo.train.config import Config
from mm_gmpo.train.engine import TrainEngine

log = logging.getLogger("mm_gmpo")

# (responses, records, truncated) -> (rewards, accuracy, extra counters)
ScoreFn = Callable[[list[str], list[Record], list[bool]], tuple[list[float], list[float], dict[str, float]]]


@dataclass
class LoopState:
    """What a checkpoint must restore besides weights and optimizer.

    The counts are over all ranks and the whole run (a resumed run carries them on), for the
    end-of-run summary: a run that skipped or timed out a lot should say so.
    """

    step: int = 0
    skipped_records: int = 0  # training records refused (data.on_bad_record=skip)
    extra: dict[str, Any] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)  # reason -> training records refused
    rows_trained: int = 0
    verifier_timeouts: int = 0
    steps_without_signal: int = 0  # steps where every group's rewards were equal (advantages 0)


@dataclass
class StepData:
    """What one RL step carries from each of its named stages to the next."""

    rollout: Rollout
    records: list[Record]  # one per prompt (``rollout.prompt_index`` points into it)
    t_generate: float = 0.0
    rewards: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # [N]
    accuracy: list[float] = field(default_factory=list)  # [N]
    counters: dict[str, float] = field(default_factory=dict)
    advantages: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # [N]
    zero_var: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))  # [N/n]
    rows: list[int] = field(default_factory=list)  # the rows the update trains on
    old_logp: dict[int, torch.Tensor] = field(default_factory=dict)  # row -> [len_r] π_old
    ref_logp: dict[int, torch.Tensor] = field(default_factory=dict)  # row -> [len_r] π_ref
    tis_w: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # [N] sampler-mismatch weights
    mismatch: list[torch.Tensor] = field(default_factory=list)  # |π_old − π_sampler| per row
    update_micros: list[list[int]] = field(default_factory=list)  # every micro-batch the update ran


def build_prompts(
    path: PolicyPath, records: list[Record], strict: bool
) -> tuple[list[PromptInput], list[Record], list[BadRecordError]]:
    """Prompts for the records that make one, those records, and the refusals (strict: stop at
    the first refusal, for the caller to raise)."""
    prompts, kept, refused = [], [], []
    for record in records:
        try:
            prompts.append(path.build_prompt(record))
            kept.append(record)
        except BadRecordError as exc:
            refused.append(exc)
            if strict:
                break
    return prompts, kept, refused


def chunks(rows: list[int], size: int) -> list[list[int]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def split_even(rows: list[int], parts: int, group: int) -> list[list[int]]:
    """Cut rows into ``parts`` pieces, on group boundaries when there are enough groups.

    Advantages are computed per group before the update, so a mini-batch may hold part of a
    group: with fewer groups than ``parts`` (e.g. 4 prompts per rank at 32 ranks and 8
    optimizer steps per rollout batch) the cut falls between rollouts, as oat's sample-counted
    train batches do. Sizes differ by at most one cutting unit.
    """
    unit = group if len(rows) >= parts * group else 1
    groups = chunks(rows, unit)
    out: list[list[int]] = []
    for p in range(parts):
        lo, hi = (p * len(groups)) // parts, ((p + 1) * len(groups)) // parts
        piece = [r for g in groups[lo:hi] for r in g]
        if piece:
            out.append(piece)
    return out


def _refusal_report(short: int, refused: list[BadRecordError], strict: bool) -> dict[str, Any]:
    """What one rank tells the others after building a round of prompts (small, picklable)."""
    by_reason: dict[str, tuple[int, str]] = {}
    for exc in refused:
        count, example = by_reason.get(exc.reason, (0, str(exc)))
        by_reason[exc.reason] = (count + 1, example)
    error = (str(refused[0]), refused[0].reason) if strict and refused else None
    return {"short": short, "refused": by_reason, "error": error}


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
        tokenizer: Any = None,
        saveable: Any = None,
        reference: nn.Module | None = None,
        reference_context: Callable[[], AbstractContextManager] | None = None,
    ) -> None:
        self.cfg = cfg
        self.path = path
        self.engine = engine
        self.rollout_engine = rollout_engine
        self.score = score
        self.records = train_records
        self.tokenizer = tokenizer  # the text tokenizer (decoding, warm-start targets)
        self.saveable = tokenizer if saveable is None else saveable  # saved with checkpoints
        self.reference = reference  # frozen KL reference (loss.kl_coef > 0), else None
        # LoRA: the reference is the policy with its adapters disabled inside this context.
        self.reference_context = reference_context or contextlib.nullcontext
        self.rank, self.world = dist.rank(), dist.world_size()
        if cfg.train.prompts_per_step % self.world != 0:
            raise ValueError(
                f"train.prompts_per_step={cfg.train.prompts_per_step} must divide by the {self.world} ranks"
            )
        self.sampler = PromptSampler(len(train_records), cfg.train.prompts_per_step, seed=cfg.train.seed)
        self.state = LoopState()
        self._examples: dict[str, str] = {}  # reason -> the first refusal's message
        self.sampling = SamplingSettings(
            n=cfg.rollout.n,
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens,
            stop_token_ids=tuple(stop_token_ids),
        )
        spec = get_loss(cfg.loss.name)
        std = cfg.loss.adv_std_normalize
        self.adv_std = spec.adv_std if std is None else std
        self.loss_unit = spec.unit
        # With one optimizer step per rollout batch every micro-batch of the update sees the
        # weights that sampled, so the update's own forward (detached) is π_old.
        t = cfg.train
        self.reuse_update_logp = t.reuse_update_logp and t.ppo_epochs == 1 and t.mini_batches == 1

    # ------------------------------------------------------------ one RL step
    def rl_step(self) -> dict[str, float]:
        """One RL step, as the named stages below run it:

        1. :meth:`_rollout`: this rank's prompts, ``rollout.n`` samples each (groups contiguous);
        2. :meth:`_score`: rewards, group advantages (normalised as the loss's registry entry
           says), optional zero-variance filtering; :meth:`_tally` adds the step to the run's
           totals over all ranks;
        3. :meth:`_reference_and_old_logp`: π_old and π_ref recomputed by the trainer on the
           exact training collation, no grad (π_old skipped on on-policy steps, where the
           update's own forward serves);
        4. :meth:`_update`: K passes of mini-batch optimizer steps over micro-batches, each loss
           divided by the mini-batch's global unit count so the cut never changes the update;
        5. the rollout engine takes the new weights; :meth:`_metrics` reports the step.
        """
        t0 = time.perf_counter()
        step = self._rollout()
        self._score(step)
        self._tally(step)
        self._reference_and_old_logp(step)
        update_metrics = self._update(step)
        self.rollout_engine.sync_weights(self.engine.unwrapped_model())
        metrics = self._metrics(step, update_metrics)
        metrics["time_step_s"] = time.perf_counter() - t0
        self.state.step += 1
        return metrics

    def _rollout(self) -> StepData:
        """Sample ``n`` responses for each of this rank's prompts of the step."""
        t0 = time.perf_counter()
        prompts, records = self._draw_prompts()
        self.rollout_engine.wake()
        rollout = (
            self.rollout_engine.generate(prompts, self.sampling) if prompts else Rollout([], [], [], [], [])
        )
        self.rollout_engine.sleep()
        return StepData(rollout, records, t_generate=time.perf_counter() - t0)

    def _draw_prompts(self) -> tuple[list[PromptInput], list[Record]]:
        """This rank's share of ``train.prompts_per_step``, refused records replaced by further
        draws from the sampler (at most one pass over the data per step).

        Each round the ranks share one small report (shortfall, refusals by reason, the first
        refusal under ``data.on_bad_record=error``), so they draw alike (the sampler stays the
        same on every rank, as checkpoints assume) and stop or raise together.
        """
        per_rank = self.cfg.train.prompts_per_step // self.world
        strict = self.cfg.data.on_bad_record == "error"
        indices = self.sampler.next_batch()[self.rank * per_rank : (self.rank + 1) * per_rank]
        prompts: list[PromptInput] = []
        records: list[Record] = []
        drawn = per_rank * self.world  # over all ranks
        while True:
            built, kept, refused = build_prompts(self.path, [self.records[i] for i in indices], strict)
            prompts, records = prompts + built, records + kept
            reports = dist.all_gather_object(_refusal_report(per_rank - len(prompts), refused, strict))
            need = min(self._take_reports(reports), (len(self.records) - drawn) // self.world)
            if need <= 0:
                break
            replacements = self.sampler.take(need * self.world)  # every rank draws alike
            drawn += need * self.world
            first = self.rank * need
            indices = replacements[first : first + per_rank - len(prompts)]
        built_total = sum(per_rank - report["short"] for report in reports)
        if built_total == 0:
            raise BadRecordError(self._nothing_built(drawn), "no_usable_records")
        if built_total < self.cfg.train.prompts_per_step and dist.is_main():
            log.warning(
                "step %d: only %d of train.prompts_per_step=%d prompts could be built from one pass "
                "over the data",
                self.state.step + 1,
                built_total,
                self.cfg.train.prompts_per_step,
            )
        return prompts, records

    def _take_reports(self, reports: list[dict[str, Any]]) -> int:
        """Count every rank's refusals (raising the first under ``error``); the largest shortfall."""
        for report in reports:
            if report["error"] is not None:
                raise BadRecordError(*report["error"])
            for reason, (count, example) in report["refused"].items():
                if reason not in self.state.refused and dist.is_main():
                    log.warning(
                        "skipping record (data.on_bad_record=skip; more %r are counted, not logged): %s",
                        reason,
                        example,
                    )
                self.state.refused[reason] = self.state.refused.get(reason, 0) + count
                self._examples.setdefault(reason, example)
                self.state.skipped_records += count
        return max(report["short"] for report in reports)

    def _nothing_built(self, drawn: int) -> str:
        """Why a step has no prompt at all: the refusals by reason, one example each."""
        reasons = sorted(self.state.refused.items(), key=lambda item: -item[1])
        causes = "; ".join(f"{reason} x{count}, e.g. {self._examples[reason]}" for reason, count in reasons)
        return (
            f"step {self.state.step + 1}: none of the {drawn} records drawn (one pass over data.train, "
            f"{len(self.records)} records) could be made into a prompt, so nothing can be trained; "
            f"refused so far: {causes or 'none'}"
        )

    def _score(self, step: StepData) -> None:
        """Rewards, group advantages, and which rows the update trains on."""
        rollout, n = step.rollout, self.cfg.rollout.n
        step.rows = list(range(len(rollout)))
        step.tis_w = torch.ones(len(rollout))  # [N] 1: no sampler-mismatch correction
        if not len(rollout):
            return
        texts = self.path.decode(rollout)
        sample_records = [step.records[i] for i in rollout.prompt_index]
        rewards, step.accuracy, step.counters = self.score(texts, sample_records, rollout.truncated)
        step.rewards = torch.tensor(rewards, dtype=torch.float32)  # [N]
        step.advantages = group_advantages(step.rewards, n, normalize_std=self.adv_std)  # [N]
        step.zero_var = zero_variance_groups(step.rewards, n)  # [N/n]
        if self.cfg.loss.filter_zero_variance:
            step.rows = [r for r in step.rows if not bool(step.zero_var[r // n])]

    def _tally(self, step: StepData) -> None:
        """Add the step to the run's totals over all ranks; say when it cannot change the policy."""
        local = [len(step.rows), float((~step.zero_var).sum()), step.counters.get("timeouts", 0.0)]
        rows, groups_with_signal, timeouts = dist.all_reduce_sum(torch.tensor(local, dtype=torch.float64))
        self.state.rows_trained += int(rows)
        self.state.verifier_timeouts += int(timeouts)
        if groups_with_signal == 0:
            self.state.steps_without_signal += 1
            if dist.is_main():
                log.warning(
                    "step %d: every prompt's %d responses got the same reward, so every advantage is 0 "
                    "and this step changes nothing (a model that never or always answers right)",
                    self.state.step + 1,
                    self.cfg.rollout.n,
                )

    def _micro_batches(self, rollout: Rollout, rows: list[int]) -> list[list[int]]:
        """Forward/backward micro-batches of ``rows``: fixed size, or packed by length under
        ``train.micro_batch_tokens`` (:mod:`mm_gmpo.train.batching`; the update is the same)."""
        t = self.cfg.train
        prompt_lens = [len(p) for p in rollout.prompt_ids]
        response_lens = [len(r) for r in rollout.response_ids]
        return plan_micro_batches(rows, prompt_lens, response_lens, t.micro_batch_size, t.micro_batch_tokens)

    def _reference_and_old_logp(self, step: StepData) -> None:
        """No-grad log-probs: π_old (unless the update's forward serves) and the KL reference."""
        want_old, want_ref = not self.reuse_update_logp, self.reference is not None
        if not (want_old or want_ref):
            return
        temperature, device = self.cfg.rollout.temperature, self._device()
        with torch.no_grad():
            for micro in self._micro_batches(step.rollout, step.rows):
                batch = self.path.collate(step.rollout, micro).to(device)
                if want_old:
                    logp, _ = self.path.forward(self.engine.module, batch, temperature, with_entropy=False)
                    self._keep_old(step, micro, logp)
                if want_ref:
                    with self.reference_context():
                        ref, _ = self.path.forward(self.reference, batch, temperature, with_entropy=False)
                    self._keep_rows(step.ref_logp, step.rollout, micro, ref)

    @staticmethod
    def _keep_rows(
        store: dict[int, torch.Tensor], rollout: Rollout, micro: list[int], logp: torch.Tensor
    ) -> torch.Tensor:
        """Per-row host copies of ``logp`` [b, R], cut to each response's length."""
        host = logp.detach().float().cpu()  # [b, R] one device-to-host copy per micro-batch
        for j, r in enumerate(micro):
            store[r] = host[j, : len(rollout.response_ids[r])]  # [len_r]
        return host

    def _keep_old(self, step: StepData, micro: list[int], logp: torch.Tensor) -> None:
        """Store π_old per row with its sampler mismatch and TIS weight."""
        self._keep_rows(step.old_logp, step.rollout, micro, logp)
        for r in micro:
            old = step.old_logp[r]  # [len_r]
            sampler = torch.tensor(step.rollout.sampler_logp[r][: len(old)])  # [len_r]
            step.mismatch.append((old - sampler).abs())
            if self.cfg.loss.tis_cap > 0:
                ones = torch.ones(1, len(old))
                step.tis_w[r] = tis_sequence_weights(old[None], sampler[None], ones, self.cfg.loss.tis_cap)[0]

    def _update(self, step: StepData) -> dict[str, float]:
        """K passes over the rows, one optimizer step per mini-batch; metrics reduced per step."""
        per_micro: list[dict[str, float]] = []
        opt_stats: list[dict[str, float]] = []
        self.engine.module.train()
        for _epoch in range(self.cfg.train.ppo_epochs):
            for mini in split_even(step.rows, self.cfg.train.mini_batches, self.cfg.rollout.n):
                units = float(
                    len(mini)
                    if self.loss_unit == "sequence"
                    else sum(len(step.rollout.response_ids[r]) for r in mini)
                )
                denominator = dist.all_reduce_sum(units) / self.world
                for micro in self._micro_batches(step.rollout, mini):
                    step.update_micros.append(micro)
                    per_micro.append(self._micro_update(step, micro, denominator))
                opt_stats.append(self.engine.step())
        out = reduce_metrics(per_micro)
        if opt_stats:
            out["grad_norm"] = sum(s["grad_norm"] for s in opt_stats) / len(opt_stats)
            out["lr"] = opt_stats[-1]["lr"]
        return out

    def _micro_update(self, step: StepData, micro: list[int], denominator: float) -> dict[str, float]:
        """Forward, loss and backward of one micro-batch; returns its metrics."""
        cfg, device = self.cfg, self._device()
        batch = self.path.collate(step.rollout, micro).to(device)
        logp, entropy = self.path.forward(self.engine.module, batch, cfg.rollout.temperature)  # [b, R]
        width = batch.response_ids.shape[1]
        if self.reuse_update_logp:
            self._keep_old(step, micro, logp)  # for the sampler-mismatch metric and TIS
            old = logp.detach()  # [b, R] this forward is π_old
        else:
            old = pad_ragged([step.old_logp[r].tolist() for r in micro], width).to(device)  # [b, R]
        ref = None
        if self.reference is not None:
            ref = pad_ragged([step.ref_logp[r].tolist() for r in micro], width).to(device)  # [b, R]
        loss, metrics = compute_policy_loss(
            cfg.loss.name,
            logp,
            old,
            (step.advantages[micro] * step.tis_w[micro]).to(device),  # [b]
            batch.response_mask,
            clip_low=cfg.loss.clip_low,
            clip_high=cfg.loss.clip_high,
            max_len=cfg.rollout.max_new_tokens,
            denominator=denominator,
            ref_logp=ref,
            kl_coef=cfg.loss.kl_coef,
            entropy=entropy,
        )
        self.engine.backward(loss)
        return {k: float(v) for k, v in metrics.items()}

    def _metrics(self, step: StepData, update_metrics: dict[str, float]) -> dict[str, float]:
        """The step's record: rollout statistics, update metrics, engine counters."""
        rollout, rows = step.rollout, step.rows
        lengths = [len(r) for r in rollout.response_ids]
        mismatch = torch.cat(step.mismatch) if step.mismatch else torch.zeros(1)  # [tokens]
        metrics: dict[str, float] = {
            "reward_mean": float(step.rewards.mean()) if len(step.rewards) else 0.0,
            "accuracy": sum(step.accuracy) / max(1, len(step.accuracy)),
            "response_length": sum(lengths) / max(1, len(lengths)),
            "truncated_frac": sum(rollout.truncated) / max(1, len(rollout)),
            "zero_variance_groups": float(step.zero_var.float().mean()) if len(step.zero_var) else 0.0,
            "rows_trained": float(len(rows)),
            "padding_frac": padding_fraction(
                step.update_micros,
                [len(p) for p in rollout.prompt_ids],
                [len(r) for r in rollout.response_ids],
            ),
            "skipped_records": float(self.state.skipped_records),
            "sampler_logp_absdiff_mean": float(mismatch.mean()),
            "sampler_logp_absdiff_max": float(mismatch.max()),
            "time_generate_s": step.t_generate,
        }
        metrics.update({f"counter/{k}": float(v) for k, v in step.counters.items()})
        metrics.update(update_metrics)
        if self.cfg.loss.tis_cap > 0 and rows:
            metrics["tis_seq_weight_mean"] = float(step.tis_w[rows].mean())
        metrics.update(self.rollout_engine.metrics())
        return metrics

    def _device(self) -> torch.device:
        return next(self.engine.unwrapped_model().parameters()).device

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, records: list[Record], max_new_tokens: int | None = None) -> dict[str, float]:
        """Greedy accuracy on held-out records (one response each)."""
        if not records:
            return {}
        prompts, kept, refused = build_prompts(self.path, records, strict=False)
        greedy = SamplingSettings(
            n=1,
            temperature=0.0,
            max_new_tokens=max_new_tokens or self.sampling.max_new_tokens,
            stop_token_ids=self.sampling.stop_token_ids,
        )
        rollout = self.rollout_engine.generate(prompts, greedy)
        texts = self.path.decode(rollout)
        _, acc, _ = self.score(texts, [kept[i] for i in rollout.prompt_index], rollout.truncated)
        return {"eval_accuracy": sum(acc) / max(1, len(acc)), "eval_skipped": float(len(refused))}

    # ------------------------------------------------------------ checkpoints
    def save(self, output_dir: str | Path) -> Path:
        return save_checkpoint(
            output_dir,
            self.state.step,
            model=self.engine.unwrapped_model(),
            tokenizer=self.saveable,
            engine=self.engine,
            trainer_state={"sampler": self.sampler.state_dict(), **dataclasses.asdict(self.state)},
            keep=self.cfg.train.keep_checkpoints,
            is_main=dist.is_main(),
        )

    def restore(self, checkpoint: str | Path) -> None:
        """Optimizer, data position and RNGs (the weights were loaded with the model)."""
        state = load_trainer_state(checkpoint)
        self.engine.load_state(Path(checkpoint) / "engine")
        self.sampler.load_state_dict(state["sampler"])
        known = {f.name for f in dataclasses.fields(LoopState)}
        self.state = LoopState(**{k: v for k, v in state.items() if k in known})
        set_rng_state(state["rng"])
