"""Shared pieces of the trainer-vs-engine parity tests and the LoRA tests.

peft starts every ``lora_B`` at zero, so a fresh adapter changes nothing and a test that
skipped the adapter would still pass; the tests give the adapters a visible effect first.
The parity tests compare the trainer's log-probs with what a rollout engine reported while
sampling, on the same tokens, before and after a real update.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def nonzero_adapters(model: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    """Draw every ``lora_B`` from N(0, std²) (seeded), so the adapted model differs from its base."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(std * torch.randn(param.shape, generator=gen))
    return model


def max_logp_diff(path: Any, model: nn.Module, rollout: Any, temperature: float) -> float:
    """Largest |trainer − engine| log-prob over the rollout's sampled tokens."""
    batch = path.collate(rollout, list(range(len(rollout))))
    with torch.no_grad():
        logp, _ = path.forward(model, batch, temperature, with_entropy=False)  # [B, R]
    return max(
        float((logp[i, : len(s)] - torch.tensor(s)).abs().max()) for i, s in enumerate(rollout.sampler_logp)
    )


def gmpo_update(path: Any, model: nn.Module, rollout: Any, lr: float = 1e-2) -> None:
    """One real GMPO step on the rollout over the trainable parameters, large enough to move a
    tiny model (an engine that missed the sync then serves visibly stale log-probs)."""
    from mm_gmpo.objective import compute_policy_loss

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    batch = path.collate(rollout, list(range(len(rollout))))
    logp, _ = path.forward(model, batch, 1.0, with_entropy=False)  # [B, R]
    adv = torch.linspace(-1.0, 1.0, len(rollout))  # [B]
    loss, _ = compute_policy_loss("gmpo", logp, logp.detach(), adv, batch.response_mask)
    loss.backward()
    opt.step()
    opt.zero_grad()
