"""Row 10: full fine-tuning vs LoRA, peak memory and update-step time on the same model and batch.

    python bench/bench_lora.py                          # hidden 512, 4 layers, 4 x (32 + 64) tokens
    python bench/bench_lora.py --hidden 128 --layers 2 --rounds 1   # smoke size

One process builds the same tiny Qwen2 twice (seeded): once as it is, once wrapped by
``mm_gmpo.lora.apply_lora`` (``model.lora_rank``, every linear layer of the language model),
each behind the torch training engine ``build_engine`` makes. A step is what the loop's update
does: forward through ``TextPolicyPath`` (chunked log-probs), a policy-gradient-shaped loss,
backward, ``engine.step()`` (clip + AdamW), with activation checkpointing as the paper recipes
run (``--no-checkpointing`` to drop it).

Memory: the model's parameter bytes plus the exact peak of the tensor storages created during
the first step (activations, gradients, AdamW states: ``mm_gmpo.testing.memory.LiveTensorBytes``,
not RSS, which on a shared CPU box mixes in the allocator and other jobs). Time: median of
``--rounds`` alternated steps after that first one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_OUT, Row, pin_threads, write_row  # noqa: E402


def build_variant(model_dir: Path, rank: int, lr: float, checkpointing: bool):
    """(engine, path) for full fine-tuning (rank 0) or LoRA of ``rank``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mm_gmpo.lora import apply_lora
    from mm_gmpo.text.path import TextPolicyPath
    from mm_gmpo.train.build import build_engine
    from mm_gmpo.train.config import load_config

    ckpt = str(checkpointing).lower()
    cfg = load_config(
        None, [f"model.lora_rank={rank}", f"optim.lr={lr}", f"model.gradient_checkpointing={ckpt}"]
    )
    torch.manual_seed(0)
    model = apply_lora(cfg, AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))
    path = TextPolicyPath(AutoTokenizer.from_pretrained(model_dir), "none", 4096)
    return build_engine(cfg, model), path


def make_batch(vocab: int, rows: int, prompt: int, response: int):
    import torch

    from mm_gmpo.train.collate import collate_prompt_response

    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, vocab, (prompt,), generator=gen).tolist() for _ in range(rows)]
    responses = [torch.randint(0, vocab, (response,), generator=gen).tolist() for _ in range(rows)]
    advantages = torch.randn(rows, generator=gen)  # [B]
    return collate_prompt_response(prompts, responses, 0), advantages


def one_step(engine, path, batch, advantages) -> float:
    """Forward, loss, backward and optimizer step; returns its seconds."""
    t0 = time.perf_counter()
    logp, _ = path.forward(engine.module, batch, 1.0)  # [B, R]
    per_row = (logp * batch.response_mask).sum(1) / batch.response_mask.sum(1)  # [B]
    (-(advantages * per_row).mean()).backward()
    engine.step()
    return time.perf_counter() - t0


def measure(args: argparse.Namespace) -> dict:
    from mm_gmpo.testing import build_tiny_qwen2
    from mm_gmpo.testing.memory import LiveTensorBytes

    overrides = dict(
        hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_hidden_layers=args.layers
    )
    out: dict = {"variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_qwen2(Path(tmp) / "m", seed=0, **overrides)
        ckpt = not args.no_checkpointing
        variants = {
            "full": build_variant(model_dir, 0, 1e-5, ckpt),
            "lora": build_variant(model_dir, args.rank, 1e-4, ckpt),
        }
    vocab = variants["full"][0].module.config.vocab_size
    batch, advantages = make_batch(vocab, args.rows, args.prompt, args.response)
    for name, (engine, path) in variants.items():
        params = list(engine.module.parameters())
        with LiveTensorBytes() as probe:
            one_step(engine, path, batch, advantages)
        out["variants"][name] = {
            "param_mb": sum(p.numel() * p.element_size() for p in params) / 2**20,
            "trainable_params": sum(p.numel() for p in params if p.requires_grad),
            "step_peak_mb": probe.peak / 2**20,
            "state_after_step_mb": probe.live / 2**20,  # AdamW states (gradients are freed)
            "times_s": [],
        }
    for _ in range(args.rounds):
        for name, (engine, path) in variants.items():
            out["variants"][name]["times_s"].append(one_step(engine, path, batch, advantages))
    for v in out["variants"].values():
        v["peak_mb"] = v["param_mb"] + v["step_peak_mb"]
        v["median_s"] = statistics.median(v["times_s"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rank", type=int, default=8, help="model.lora_rank of the LoRA side")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--response", type=int, default=64)
    ap.add_argument(
        "--no-checkpointing",
        action="store_true",
        help="without activation checkpointing (on in the paper recipes)",
    )
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    threads = pin_threads()
    result = measure(args)
    full, lora = result["variants"]["full"], result["variants"]["lora"]
    mem_ratio, time_ratio = lora["peak_mb"] / full["peak_mb"], lora["median_s"] / full["median_s"]
    row = Row(
        row=10,
        name="Full fine-tuning vs LoRA: peak memory and step time",
        figure="LoRA: parameters + peak tensor memory of one update step (MB), and median step time (s)",
        value=lora["peak_mb"],
        baseline_name="full fine-tuning of the same model on the same batch",
        baseline_value=full["peak_mb"],
        ratio=mem_ratio,
        ratio_note=(
            f"LoRA / full peak memory ({lora['peak_mb']:.3g} MB vs {full['peak_mb']:.3g} MB); step time "
            f"LoRA / full {time_ratio:.3g} ({lora['median_s']:.3g} s vs {full['median_s']:.3g} s)"
        ),
        conditions=(
            f"tiny Qwen2 (hidden {args.hidden}, {args.layers} layers, fp32, vocab 498), LoRA rank {args.rank} on "
            f"every linear layer of the language model ({lora['trainable_params']:,} trainable parameters vs "
            f"{full['trainable_params']:,}), {args.rows} rows x ({args.prompt} prompt + {args.response} response) "
            f"tokens, torch engine, activation checkpointing {'off' if args.no_checkpointing else 'on'}, "
            f"forward + backward + AdamW step, median of {args.rounds} alternated "
            f"round(s), {threads} thread(s)"
        ),
        details={**result, "time_ratio": time_ratio, "memory_ratio": mem_ratio, "args": vars(args)},
    )
    path = write_row(row, args.out)
    print(json.dumps({"row": 10, "memory_ratio": mem_ratio, "time_ratio": time_ratio, "file": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
