"""DeepSpeed ZeRO 0-3 behind the :class:`~mm_gmpo.train.engine.TrainEngine` interface.

The loop drives any engine the same way: ``backward`` once per micro-batch (a variable number,
set by how many rollouts survive filtering), then ``step`` once per optimizer batch. Each
micro-batch loss is already divided by the optimizer batch's unit count (per rank:
``global_units / world_size``), so:

* DeepSpeed must not divide it again by ``gradient_accumulation_steps``: we call
  ``backward(loss, scale_wrt_gas=False)`` and keep ``gradient_accumulation_steps = 1``;
* DeepSpeed must not decide where the accumulation boundary is: its own counter assumes a
  fixed number of micro-batches per step. We run it with ``managed_gradient_accumulation:
  false`` ("unmanaged" mode), in which ``backward`` only accumulates and every ``step()`` is
  the boundary: it reduces (averages over ranks), clips and applies the update exactly once.
  Averaging over ``W`` ranks of losses scaled by ``W / global_units`` gives the exact
  full-batch gradient.

DeepSpeed is imported lazily so ``import mm_gmpo`` never needs it.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mm_gmpo.lora import peft_model_of
from mm_gmpo.train import dist
from mm_gmpo.train.engine import (
    OptimSettings,
    build_optimizer,
    enable_activation_checkpointing,
    freeze,
    lr_lambda,
)

CHECKPOINT_TAG = "deepspeed"


def _import_deepspeed() -> Any:
    """Import deepspeed, or fail with a message that names the package to install."""
    try:
        import deepspeed
    except ImportError as err:  # pragma: no cover - exercised only without deepspeed
        raise ImportError(
            "the DeepSpeed engine needs the 'deepspeed' package (pip install deepspeed); "
            "use TorchEngine for single-process training without it"
        ) from err
    return deepspeed


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict update, so ``extra_config`` can set one nested ZeRO key."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_ds_config(
    settings: OptimSettings,
    zero_stage: int,
    bf16: bool,
    offload: bool = False,
    extra_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The DeepSpeed JSON config this engine runs with (optimizer and schedule are passed as
    objects, so they are absent here).

    Stage 0 in fp32 clips in our own optimizer hook (see :class:`DeepSpeedEngine`), because
    there DeepSpeed clips without reporting the norm; every other case clips through
    ``gradient_clipping``.
    """
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage}")
    if offload and zero_stage == 0:
        raise ValueError("optimizer offload needs ZeRO stage 1-3")
    clip = max(float(settings.grad_clip), 0.0)
    zero: dict[str, Any] = {"stage": zero_stage}
    if zero_stage < 2:
        # Unmanaged accumulation reduces at step() for stages 0/1; overlap is for stage 2/3.
        zero["overlap_comm"] = False
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,  # nominal: batches are cut by the loop
        "gradient_accumulation_steps": 1,
        "managed_gradient_accumulation": False,
        "gradient_clipping": 0.0 if (zero_stage == 0 and not bf16) else clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bool(bf16)},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    return _merge(config, extra_config or {})


class DeepSpeedEngine:
    """ZeRO 0-3 training engine with the same interface as :class:`TorchEngine`.

    Args:
        model: the plain ``PreTrainedModel``; DeepSpeed wraps (and under ZeRO-3 partitions) it.
        settings: optimizer and LR schedule; the optimizer is ``build_optimizer``'s AdamW
            (no DeepSpeed fused ops are needed), the schedule ``lr_lambda``'s LambdaLR.
        zero_stage: 0-3.
        bf16: bf16 weights and activations with fp32 master weights (meant for GPUs; it also
            runs on CPU, where the tests use fp32 for exact comparisons).
        gradient_checkpointing: enabled here (non-reentrant, which works under ZeRO-3) and the
            model put in train mode, since HF only checkpoints while ``training`` is set.
        offload: keep optimizer states on the CPU (``DeepSpeedCPUAdam``; needs its C++ op).
        extra_config: merged over the generated DeepSpeed config (bucket sizes and the like).

    Must be built on every rank (it initialises the process group if needed). ``module`` is
    DeepSpeed's wrapper: call forward through it so ZeRO-3 can gather parameters.
    """

    def __init__(
        self,
        model: nn.Module,
        settings: OptimSettings,
        zero_stage: int = 2,
        bf16: bool = False,
        gradient_checkpointing: bool = False,
        offload: bool = False,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        deepspeed = _import_deepspeed()
        from deepspeed.runtime.engine import DeepSpeedEngine as _DSEngine

        if not hasattr(_DSEngine, "managed_gradient_accumulation"):
            # Older versions silently ignore the config key and would step on their own counter.
            raise RuntimeError(
                f"DeepSpeed {deepspeed.__version__} lacks 'managed_gradient_accumulation' "
                "(caller-owned optimizer steps, deepspeedai/DeepSpeed#8183); upgrade DeepSpeed"
            )
        self.settings = settings
        self.zero_stage = zero_stage
        self.bf16 = bf16
        self.config = build_ds_config(settings, zero_stage, bf16, offload, extra_config)

        dist.init_distributed()
        deepspeed.init_distributed(dist_backend=dist.default_backend())

        if gradient_checkpointing:
            enable_activation_checkpointing(model)

        optimizer = build_optimizer(model, settings)
        if offload:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            groups = [
                {"params": g["params"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups
            ]
            optimizer = DeepSpeedCPUAdam(
                groups, lr=settings.lr, betas=settings.betas, eps=settings.eps, adamw_mode=True
            )

        # Stage 0 in fp32 hands our AdamW to DeepSpeed unwrapped; DeepSpeed then clips but
        # throws the norm away. We clip in a pre-step hook instead, after DeepSpeed's
        # all-reduce, where every rank holds the same averaged gradients.
        self._hook_norm: float | None = None
        if zero_stage == 0 and not bf16:
            optimizer.register_step_pre_hook(self._clip_before_step)

        schedule = lr_lambda(settings)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            # A callable, so the schedule wraps the optimizer DeepSpeed actually steps
            # (it drops empty parameter groups, which a prebuilt LambdaLR would miss).
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
            config=self.config,
        )
        self.module = self.engine
        self._lora = peft_model_of(model) is not None

    def _clip_before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Optimizer pre-step hook (stage 0, fp32): clip the reduced gradients, keep the norm."""
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        max_norm = self.settings.grad_clip if self.settings.grad_clip > 0 else math.inf
        self._hook_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate one micro-batch's gradients; the loss is already scaled by the loop."""
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> dict[str, float]:
        """Reduce across ranks, clip, update and zero; the LR reported is the one applied."""
        lr = float(self.engine.get_lr()[0])
        self._hook_norm = None
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        if norm is None:
            norm = self._hook_norm
        if norm is None:
            norm = math.nan
        if isinstance(norm, torch.Tensor):
            norm = norm.item()
        return {"grad_norm": float(norm), "lr": lr}

    def prepare_reference(self, model: nn.Module) -> nn.Module:
        """The frozen KL reference, sharded like the policy under ZeRO-3 (else a full copy).

        Under ZeRO-3 a second full 7B copy per GPU would undo the point of the stage, so the
        reference gets its own optimizer-less DeepSpeed engine with the same stage; forward it
        on every rank (parameters are gathered layer by layer).
        """
        model = freeze(model)
        if self.zero_stage != 3:
            return model.to(next(self.engine.module.parameters()).device)
        deepspeed = _import_deepspeed()
        config = {
            "train_micro_batch_size_per_gpu": 1,
            "zero_optimization": {"stage": 3},
            "bf16": {"enabled": self.bf16},
            "steps_per_print": 2**31 - 1,
        }
        engine, *_ = deepspeed.initialize(model=model, config=config)
        engine.eval()
        return engine

    def gathered_for_generation(self):
        """Context in which the full weights are present (ZeRO-3 gathers its shards for generate)."""
        import contextlib

        if self.zero_stage != 3:
            return contextlib.nullcontext()
        deepspeed = _import_deepspeed()
        return deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()))

    def unwrapped_model(self) -> nn.Module:
        """The wrapped ``PreTrainedModel`` (under ZeRO-3 its parameters are partitioned)."""
        return self.engine.module

    def save_state(self, directory: Path) -> None:
        """DeepSpeed checkpoint (partitioned optimizer state, schedule, step counters).

        Collective: call on every rank with the same directory.
        """
        # LoRA: the frozen base is model.path's and never changes; only the adapters are saved.
        self.engine.save_checkpoint(str(directory), tag=CHECKPOINT_TAG, exclude_frozen_parameters=self._lora)

    def load_state(self, directory: Path) -> None:
        """Restore what :meth:`save_state` wrote (also the weights DeepSpeed saved with it)."""
        if not (Path(directory) / CHECKPOINT_TAG).is_dir():  # DeepSpeed would only assert
            raise FileNotFoundError(f"no DeepSpeed checkpoint '{CHECKPOINT_TAG}' under {directory}")
        path, _ = self.engine.load_checkpoint(
            str(directory),
            tag=CHECKPOINT_TAG,
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
            load_module_strict=not self._lora,  # LoRA: the base weights were not saved (see save_state)
        )
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint '{CHECKPOINT_TAG}' under {directory}")

    def state_dict_for_save(self) -> dict[str, torch.Tensor] | None:
        """Under ZeRO-3, the full fp32 state dict on rank 0 (empty dict elsewhere); else None.

        Collective under ZeRO-3 (every rank must call it). Trainable weights come from the
        optimizer's fp32 master copy; frozen ones are gathered from the module. Tied weights
        are gathered once and appear under each of their names, as in ``state_dict()``. LoRA:
        only the trainable (adapter) weights, which is all a peft checkpoint keeps.
        """
        if self.zero_stage != 3:
            return None
        import deepspeed
        from deepspeed.utils import safe_get_full_fp32_param

        module = self.engine.module
        main = dist.is_main()
        first_name: dict[int, str] = {}  # tied weights: gather once, list under every name
        out: dict[str, torch.Tensor] = {}
        for name, tensor in module.state_dict(keep_vars=True).items():
            if self._lora and not tensor.requires_grad:
                continue
            if id(tensor) in first_name:
                if main:
                    out[name] = out[first_name[id(tensor)]]
                continue
            first_name[id(tensor)] = name
            if isinstance(tensor, nn.Parameter) and hasattr(tensor, "ds_id"):
                full = safe_get_full_fp32_param(tensor) if tensor.requires_grad else None
                if full is None:  # frozen: not in the optimizer, gather the module's copy
                    with deepspeed.zero.GatheredParameters([tensor]):
                        full = tensor.detach().clone() if main else None
            else:
                full = tensor.detach()  # buffers are not partitioned
            if main and full is not None:
                out[name] = full.float().cpu() if full.is_floating_point() else full.cpu()
        return out
