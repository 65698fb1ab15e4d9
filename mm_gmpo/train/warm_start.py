"""A short supervised warm-start on ground-truth answers, so RL does not start at chance.

Only the CPU demos use it: a tiny random model never samples a correct answer, and with all
rewards 0 every group has zero variance and GMPO has nothing to push on. Real runs start
from a pretrained model and leave ``warm_start.steps`` at 0.
"""

from __future__ import annotations

import random

import torch

from mm_gmpo.data.records import Record
from mm_gmpo.rollout.base import Rollout
from mm_gmpo.train.loop import Trainer


def answer_text(record: Record) -> str:
    answer = record.answer[0] if isinstance(record.answer, list) else record.answer
    return f"\\boxed{{{answer}}}"


def warm_start(trainer: Trainer, steps: int, lr: float, batch_size: int, seed: int) -> list[float]:
    """``steps`` AdamW steps of next-token loss on "\\boxed{answer}<eos>" after each prompt."""
    if steps <= 0:
        return []
    model = trainer.engine.unwrapped_model()
    device = next(model.parameters()).device
    tokenizer = trainer.tokenizer  # the text tokenizer (a VL run's processor is trainer.saveable)
    eos = trainer.sampling.stop_token_ids[0] if trainer.sampling.stop_token_ids else tokenizer.eos_token_id
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = random.Random(seed)
    losses = []
    model.train()
    for _ in range(steps):
        picked = rng.sample(trainer.records, min(batch_size, len(trainer.records)))
        built = [trainer.path.build_prompt(r) for r in picked]  # VL: ids + this record's images
        targets = [tokenizer(answer_text(r), add_special_tokens=False)["input_ids"] + [eos] for r in picked]
        fake = Rollout(
            list(range(len(picked))),
            [b.input_ids for b in built],
            targets,
            [[0.0] * len(t) for t in targets],
            [False] * len(picked),
            [b.multimodal for b in built],
        )
        batch = trainer.path.collate(fake, list(range(len(picked)))).to(device)
        logp, _ = trainer.path.forward(model, batch, temperature=1.0, with_entropy=False)  # [B, R]
        mask = batch.response_mask  # [B, R]
        loss = -(logp * mask).sum() / mask.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    optimizer.zero_grad(set_to_none=True)
    return losses
