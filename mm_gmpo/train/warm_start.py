"""A short supervised warm-start on ground-truth answers, so RL does not start at chance.

Only the CPU demos use it: a tiny random model never samples a correct answer, and with all
rewards 0 every group has zero variance and GMPO has nothing to push on. Real runs start
from a pretrained model and leave ``warm_start.steps`` at 0.

It runs on the plain model before the training engine wraps it (``train.build.build_run``),
with its own AdamW, so it works the same under every engine: DeepSpeed's gradient hooks and
ZeRO-3's partitioned parameters only exist once the engine is built, and the RL optimizer's
state and schedule never see the warm-start. Every rank takes the same batches, so the ranks'
copies stay equal (DeepSpeed also broadcasts rank 0's weights when it wraps the model).
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn

from mm_gmpo.data.records import BadRecordError, Record
from mm_gmpo.policy_paths import PolicyPath
from mm_gmpo.rollout.base import Rollout
from mm_gmpo.train.config import WarmStartConfig
from mm_gmpo.train.loop import build_prompts


def answer_text(record: Record) -> str:
    answer = record.answer[0] if isinstance(record.answer, list) else record.answer
    return f"\\boxed{{{answer}}}"


def warm_start(
    model: nn.Module,
    path: PolicyPath,
    tokenizer: Any,
    records: list[Record],
    eos_id: int,
    settings: WarmStartConfig,
    *,
    seed: int,
    strict: bool,
) -> list[float]:
    """``settings.steps`` AdamW steps of next-token loss on "\\boxed{answer}<eos>" after each prompt.

    ``tokenizer`` is the text tokenizer (a VL run's processor holds it). Records the path
    refuses are left out of a batch (``strict``: the first one raises).
    """
    if settings.steps <= 0:
        return []
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr)
    rng = random.Random(seed)
    losses = []
    model.train()
    for _ in range(settings.steps):
        picked = rng.sample(records, min(settings.batch_size, len(records)))
        built, kept, refused = build_prompts(path, picked, strict)  # VL: ids + this record's images
        if refused and (strict or not built):
            raise BadRecordError(
                f"warm start: {refused[0]}"
                if strict
                else f"warm start: no record of a batch of {len(picked)} made a prompt (e.g. {refused[0]})",
                refused[0].reason,
            )
        targets = [tokenizer(answer_text(r), add_special_tokens=False)["input_ids"] + [eos_id] for r in kept]
        fake = Rollout(
            list(range(len(kept))),
            [b.input_ids for b in built],
            targets,
            [[0.0] * len(t) for t in targets],
            [False] * len(kept),
            [b.multimodal for b in built],
        )
        batch = path.collate(fake, list(range(len(kept)))).to(device)
        logp, _ = path.forward(model, batch, temperature=1.0, with_entropy=False)  # [B, R]
        mask = batch.response_mask  # [B, R]
        loss = -(logp * mask).sum() / mask.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    optimizer.zero_grad(set_to_none=True)
    return losses
