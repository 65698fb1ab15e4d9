"""Training engines: what owns the model's parameters, the optimizer and the LR schedule.

The loop sees one small interface (:class:`TrainEngine`): call ``forward`` through
``engine.module``, ``backward`` each micro-batch loss (already divided by the optimizer
batch's unit count, so no further scaling), ``step`` once per optimizer batch. Two
implementations: :class:`TorchEngine` for one process without DeepSpeed, and the DeepSpeed
engine (``mm_gmpo.train.ds_engine``) for ZeRO 0-3 on one or many ranks.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn


@dataclass(frozen=True)
class OptimSettings:
    """Plain optimizer settings, copied from the config so engines don't import it."""

    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0
    scheduler: str = "constant"  # "constant" or "cosine"
    warmup_steps: int = 0
    total_steps: int = 1
    min_lr_ratio: float = 0.0


class TrainEngine(Protocol):
    """The training side of one step, as the loop uses it."""

    module: nn.Module  # call forward through this (may be a wrapper)

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate gradients of one micro-batch loss (no extra scaling)."""

    def step(self) -> dict[str, float]:
        """Clip, apply and zero the accumulated gradients; returns grad_norm and lr."""

    def unwrapped_model(self) -> nn.Module:
        """The plain ``PreTrainedModel`` (for generation, weight sync and saving)."""

    def save_state(self, directory: Path) -> None:
        """Write optimizer and scheduler state (model weights are saved separately)."""

    def load_state(self, directory: Path) -> None:
        """Restore what ``save_state`` wrote."""

    def state_dict_for_save(self) -> dict[str, torch.Tensor] | None:
        """A full (gathered) model state dict on rank 0 for saving, or None to save the module."""

    def prepare_reference(self, model: nn.Module) -> nn.Module:
        """A frozen copy of the policy (the KL reference), placed as this engine places the policy."""

    def gathered_for_generation(self) -> contextlib.AbstractContextManager:
        """A context in which the full weights are present for ``generate`` (ZeRO-3 gathers)."""


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each decoder layer's activations in backward (both engines call this).

    Non-reentrant: it works under ZeRO-3 and keeps gradients flowing into the language model
    when a frozen vision tower hands it inputs without grad. HF only checkpoints while the
    model is in train mode, so that is set too; the KV cache is off (it cannot coexist).
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False
    model.train()


def lr_lambda(settings: OptimSettings):
    """LR multiplier per optimizer step: linear warm-up, then constant or cosine decay."""

    def fn(step: int) -> float:
        if settings.warmup_steps > 0 and step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        if settings.scheduler == "constant":
            return 1.0
        span = max(1, settings.total_steps - settings.warmup_steps)
        progress = min(1.0, (step - settings.warmup_steps) / span)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return settings.min_lr_ratio + (1.0 - settings.min_lr_ratio) * cosine

    return fn


def build_optimizer(model: nn.Module, settings: OptimSettings) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no decay on biases and norms, as is usual."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=settings.betas, eps=settings.eps)


class TorchEngine:
    """Single-process engine: plain AdamW, gradient clipping and a LambdaLR schedule."""

    def __init__(
        self, model: nn.Module, settings: OptimSettings, gradient_checkpointing: bool = False
    ) -> None:
        if gradient_checkpointing:
            enable_activation_checkpointing(model)
        self.module = model
        self.settings = settings
        self.optimizer = build_optimizer(model, settings)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(settings))

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> dict[str, float]:
        params = [p for p in self.module.parameters() if p.requires_grad]
        max_norm = self.settings.grad_clip if self.settings.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": float(grad_norm), "lr": float(lr)}

    def unwrapped_model(self) -> nn.Module:
        return self.module

    def save_state(self, directory: Path) -> None:
        torch.save(
            {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
            Path(directory) / "optim_state.pt",
        )

    def load_state(self, directory: Path) -> None:
        state = torch.load(Path(directory) / "optim_state.pt", map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def state_dict_for_save(self) -> dict[str, torch.Tensor] | None:
        return None

    def prepare_reference(self, model: nn.Module) -> nn.Module:
        return freeze(model).to(next(self.module.parameters()).device)

    def gathered_for_generation(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


def freeze(model: nn.Module) -> nn.Module:
    """No gradients, eval mode: a model that is only ever read (the KL reference)."""
    model.requires_grad_(False)
    return model.eval()
