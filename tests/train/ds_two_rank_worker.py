"""Shared batch/reference helpers for the DeepSpeed engine tests, and a torchrun worker.

As a module (loaded by path from ``test_ds_engine.py``) it provides the fixed policy-loss
batch and the single-process :class:`TorchEngine` reference step. As a script, run with
``torchrun --nproc_per_node 2``, each rank takes its half of the sequences, cuts it into
two micro-batches, scales by ``denominator = global_units / world_size`` and takes one
DeepSpeed step; rank 0 compares against the full-batch reference and writes a JSON report
that the test checks (the comparison numbers, not just a pass flag, so failures are legible).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

import torch
from torch import nn

from mm_gmpo.objective import compute_policy_loss
from mm_gmpo.train.engine import OptimSettings, TorchEngine

BATCH, SEQ = 8, 14
# Adam's first step is lr * g / (|g| + eps): with eps far above |g| (~1e-2 here) the update is
# nearly linear in the gradient, so a wrongly scaled gradient shows in the parameters.
SETTINGS_LINEAR = dict(lr=1e-2, eps=1e-1, weight_decay=0.01)


def policy_logp(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Log-prob of each next token under ``model``."""
    logits = model(input_ids=input_ids).logits[:, :-1].float()  # [B, T-1, V]
    logp = torch.log_softmax(logits, dim=-1)  # [B, T-1, V]
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # [B, T-1]


def load_model(model_dir: str | Path, frozen: tuple[str, ...] = ()) -> nn.Module:
    """A fresh copy of the tiny Qwen2 (same weights on every call and every rank), with the
    parameters named in ``frozen`` excluded from training (as a frozen vision tower would be)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    return model


def build_batch(model_dir: str | Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids, ragged response masks, slightly off-policy old log-probs, advantages."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 480, (BATCH, SEQ), generator=gen)  # [B, T]
    mask = torch.zeros(BATCH, SEQ - 1)  # [B, T-1] response tokens after a 4-token prompt
    for i in range(BATCH):
        mask[i, 4 : SEQ - 1 - (i % 4)] = 1.0
    advantages = torch.randn(BATCH, generator=gen)  # [B]
    with torch.no_grad():
        logp = policy_logp(load_model(model_dir), input_ids)  # [B, T-1]
    old_logp = logp + 0.05 * torch.randn(logp.shape, generator=gen)  # [B, T-1]
    return {"input_ids": input_ids, "mask": mask, "old_logp": old_logp, "advantages": advantages}


def units(loss_name: str, mask: torch.Tensor) -> float:
    """Loss units in ``mask``'s rows: tokens for dapo, sequences otherwise."""
    return float(mask.sum()) if loss_name == "dapo" else float(mask.shape[0])


def micro_losses(
    engine, batch: dict[str, torch.Tensor], rows: list[int], n_micro: int, loss_name: str, denominator: float
) -> float:
    """Forward/backward ``rows`` as ``n_micro`` micro-batches; returns the summed loss."""
    total = 0.0
    for chunk in torch.tensor(rows).chunk(n_micro):
        logp = policy_logp(engine.module, batch["input_ids"][chunk])  # [b, T-1]
        loss, _ = compute_policy_loss(
            loss_name,
            logp,
            batch["old_logp"][chunk],
            batch["advantages"][chunk],
            batch["mask"][chunk],
            denominator=denominator,
        )
        engine.backward(loss)
        total += float(loss.detach())
    return total


def reference_step(
    model_dir: str | Path,
    settings: OptimSettings,
    batch: dict[str, torch.Tensor],
    loss_name: str,
    frozen: tuple[str, ...] = (),
) -> tuple[float, dict[str, float], dict[str, torch.Tensor]]:
    """One TorchEngine step on the whole batch: (loss, step stats, updated state dict)."""
    engine = TorchEngine(load_model(model_dir, frozen), settings)
    rows = list(range(BATCH))
    loss = micro_losses(engine, batch, rows, 1, loss_name, units(loss_name, batch["mask"]))
    stats = engine.step()
    return loss, stats, {k: v.detach().clone() for k, v in engine.module.state_dict().items()}


def full_state(engine) -> dict[str, torch.Tensor] | None:
    """A snapshot (copied, not a view) of the full weights on rank 0, collective under ZeRO-3;
    None on other ranks."""
    from mm_gmpo.train import dist

    gathered = engine.state_dict_for_save()
    if not dist.is_main():
        return None
    if gathered is None:
        gathered = engine.unwrapped_model().state_dict()
    return {k: v.detach().float().cpu().clone() for k, v in gathered.items()}


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest element-wise difference over the keys of ``b`` (all must be present in ``a``)."""
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in b)


def run_worker(model_dir: str, out: Path, cases: list[tuple[int, str]]) -> None:
    """Each rank: its half of the batch, two micro-batches, one DeepSpeed step per case."""
    from mm_gmpo.train import dist
    from mm_gmpo.train.ds_engine import DeepSpeedEngine

    dist.init_distributed()
    world, rank = dist.world_size(), dist.rank()
    assert world == 2, f"run with --nproc_per_node 2, got world size {world}"
    report: dict[str, object] = {"world_size": world, "rank_sum": dist.all_reduce_sum(float(rank + 1))}
    batch = build_batch(model_dir)
    rows = list(range(rank, BATCH, world))  # interleaved halves: ranks get different lengths
    settings = OptimSettings(**SETTINGS_LINEAR, grad_clip=0.0)
    initial = {k: v.clone() for k, v in load_model(model_dir).state_dict().items()}
    for stage, loss_name in cases:
        local_units = units(loss_name, batch["mask"][rows])
        global_units = dist.all_reduce_sum(local_units)
        engine = DeepSpeedEngine(load_model(model_dir), settings, zero_stage=stage)
        local_loss = micro_losses(engine, batch, rows, 2, loss_name, global_units / world)
        stats = engine.step()
        per_rank_loss = dist.all_reduce_sum(
            torch.tensor([local_loss if r == rank else 0.0 for r in range(2)])
        )
        ds_state = full_state(engine)
        if dist.is_main():
            ref_loss, ref_stats, ref_state = reference_step(model_dir, settings, batch, loss_name)
            report[f"stage{stage}_{loss_name}"] = {
                "global_units": global_units,
                "expected_units": units(loss_name, batch["mask"]),
                "rank_losses": per_rank_loss.tolist(),
                "ds_loss": float(per_rank_loss.sum()) / world,
                "ref_loss": ref_loss,
                "ds_grad_norm": stats["grad_norm"],
                "ref_grad_norm": ref_stats["grad_norm"],
                "param_diff": max_abs_diff(ds_state, ref_state),
                "param_change": max_abs_diff(ref_state, initial),
            }
        dist.barrier()
    if dist.is_main():
        out.write_text(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--cases", default="0:gmpo,2:gmpo,2:dapo,3:gmpo", help="stage:loss,...")
    args = parser.parse_args()
    cases = [(int(s), name) for s, name in (c.split(":") for c in args.cases.split(","))]
    code = 0
    try:
        run_worker(args.model_dir, args.out, cases)
        from mm_gmpo.train import dist

        dist.shutdown()
    except Exception:  # report, then leave without gloo's at-exit teardown (it can abort)
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
