"""Row 6 (GPU only): a DeepSpeed bf16 GMPO update step on a random Qwen2.5-1.5B-shaped model.

    python bench/gpu_step.py --dry-run          # anywhere: the shape, parameter count, FLOPs/token
    python bench/gpu_step.py --tiny             # anywhere: the same code path on a tiny model (a check)
    python bench/gpu_step.py                    # on a CUDA machine: tokens/s and MFU

What one step is: ``--micro-batches`` micro-batches of ``--micro-batch`` sequences of
``--prompt-len`` + ``--response-len`` random tokens; each micro-batch runs the policy forward
(logits of the response positions only), the response log-probs, ``compute_policy_loss("gmpo")``
and DeepSpeed's backward; then one optimizer step (mm-gmpo's ``DeepSpeedEngine``, ZeRO stage
``--zero-stage``, bf16 with fp32 master weights, AdamW). The weights are randomly initialised
from the Qwen2.5-1.5B shape (no download): speed does not depend on the values.

Model FLOPs per token use the usual dense-transformer count (PaLM, appendix B): 6 x the
parameters in matrix multiplies (attention projections, MLP, LM head; embeddings excluded) plus
12 x layers x hidden x sequence length for attention scores, counted without causal halving.
MFU = tokens/s x FLOPs/token / the card's peak dense bf16 FLOP/s (``--peak-tflops`` or the
table below). Gradient checkpointing (``--grad-ckpt``) recomputes the forward; that extra work
is not counted as model FLOPs, as is the convention.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_OUT, Row, machine_info, median, write_row  # noqa: E402

# Qwen2.5-1.5B's published architecture (config.json of the hub model).
QWEN25_15B = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
}
TINY = {
    **QWEN25_15B,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 512,
}
# Dense bf16 peak (no sparsity), TFLOP/s, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 70.0,
}


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if all(part in device_name for part in key.split()):
            return value
    return None


def matmul_params(shape: dict) -> int:
    """Weights that take part in a matrix multiply per token (biases included, embeddings not)."""
    h, i, n_layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    head_dim = h // shape["num_attention_heads"]
    kv = shape["num_key_value_heads"] * head_dim
    attn = h * h + h + 2 * (h * kv + kv) + h * h  # q (+bias), k, v (+bias), o (no bias)
    mlp = 3 * h * i  # gate, up, down
    return n_layers * (attn + mlp) + h * shape["vocab_size"]  # + LM head


def flops_per_token(shape: dict, seq_len: int) -> float:
    """Training FLOPs per token: forward + backward (x3) of the matmuls and attention scores."""
    return 6.0 * matmul_params(shape) + 12.0 * shape["num_hidden_layers"] * shape["hidden_size"] * seq_len


def build_model(shape: dict, dtype):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config).to(dtype)
    return model


def count_params_meta(shape: dict) -> int:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**shape))
    return sum(p.numel() for p in model.parameters())


def run_steps(shape: dict, args: argparse.Namespace, device: str) -> dict:
    import torch

    from mm_gmpo.objective import compute_policy_loss
    from mm_gmpo.train.collate import response_logp_and_entropy
    from mm_gmpo.train.ds_engine import DeepSpeedEngine
    from mm_gmpo.train.engine import OptimSettings

    bf16 = device == "cuda" or args.bf16
    model = build_model(shape, torch.bfloat16 if bf16 else torch.float32)
    if device == "cuda":
        model = model.cuda()
    engine = DeepSpeedEngine(
        model,
        OptimSettings(lr=1e-6, grad_clip=1.0),
        zero_stage=args.zero_stage,
        bf16=bf16,
        gradient_checkpointing=args.grad_ckpt,
    )
    engine.module.train()
    b, p, r = args.micro_batch, args.prompt_len, args.response_len
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, shape["vocab_size"], (b, p + r), generator=g).to(device)  # [b, P+R]
    resp = ids[:, p:]  # [b, R]
    old_logp = (-torch.rand(b, r, generator=g) * 2).to(device)  # [b, R]
    adv = torch.randn(b, generator=g).to(device)  # [b]
    mask = torch.ones(b, r, dtype=torch.bool, device=device)  # [b, R]
    denom = float(b * args.micro_batches)

    def step() -> None:
        for _ in range(args.micro_batches):
            out = engine.module(input_ids=ids, logits_to_keep=r + 1, use_cache=False)
            logits = out.logits[:, :-1]  # [b, R, V]
            logp, _ = response_logp_and_entropy(logits, resp, 1.0, with_entropy=False)  # [b, R]
            loss, _ = compute_policy_loss("gmpo", logp, old_logp, adv, mask, denominator=denom)
            engine.backward(loss)
        engine.step()

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    tokens = b * (p + r) * args.micro_batches
    out = {"step_s": times, "median_step_s": median(times), "tokens_per_step": tokens}
    out["tokens_per_s"] = tokens / out["median_step_s"]
    if device == "cuda":
        out["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="shape and FLOPs only, no step (any machine)")
    ap.add_argument("--tiny", action="store_true", help="run the step path on a tiny model (any machine)")
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--micro-batches", type=int, default=8, help="micro-batches per optimizer step")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--response-len", type=int, default=1536)
    ap.add_argument("--zero-stage", type=int, default=2)
    ap.add_argument("--grad-ckpt", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="bf16 also off CUDA (always on with CUDA)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the card's peak bf16 TFLOP/s")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)

    import torch

    shape = TINY if args.tiny else QWEN25_15B
    seq = args.prompt_len + args.response_len
    fpt = flops_per_token(shape, seq)
    n_params = count_params_meta(shape)
    cuda = torch.cuda.is_available()
    info = {
        "shape": "tiny" if args.tiny else "Qwen2.5-1.5B",
        "params": n_params,
        "matmul_params": matmul_params(shape),
        "flops_per_token": fpt,
        "seq_len": seq,
        "micro_batch": args.micro_batch,
        "micro_batches": args.micro_batches,
        "zero_stage": args.zero_stage,
        "grad_ckpt": args.grad_ckpt,
    }
    base = {
        "row": 6,
        "name": "GPU: DeepSpeed bf16 GMPO update step, Qwen2.5-1.5B shape (random init)",
        "figure": "tokens/s and MFU (model FLOPs / peak dense bf16)",
        "target": "recorded where a GPU is lent",
    }
    if args.dry_run or (not cuda and not args.tiny):
        why = "dry run" if args.dry_run else "no GPU lent to this task"
        row = Row(
            **base,
            value=None,
            status="not measured",
            conditions=(
                f"{why}: shape checked on the meta device, {n_params / 1e9:.3f} B parameters, "
                f"{fpt / 1e9:.2f} GFLOPs per trained token at sequence length {seq}"
            ),
            details=info,
        )
        path = write_row(row, args.out)
        print(json.dumps({**info, "status": row.status, "written": str(path)}))
        return 0

    device = "cuda" if cuda else "cpu"
    result = run_steps(shape, args, device)
    name = torch.cuda.get_device_name(0) if cuda else machine_info()["cpu"]
    peak = args.peak_tflops or (peak_tflops(name) if cuda else None)
    mfu = result["tokens_per_s"] * fpt / (peak * 1e12) if peak else None
    info.update(result, device=name, peak_tflops=peak, mfu=mfu)
    row = Row(
        **base,
        value=result["tokens_per_s"],
        baseline_name=f"peak dense bf16 of {name}" if peak else "",
        baseline_value=peak,
        ratio=mfu,
        ratio_note="MFU = tokens/s x FLOPs/token / peak FLOP/s",
        status="measured" if (cuda and not args.tiny) else "tiny check (not a figure)",
        conditions=(
            f"{info['shape']}, {args.micro_batches} x {args.micro_batch} sequences of {seq} tokens per step, "
            f"ZeRO-{args.zero_stage}, grad ckpt {args.grad_ckpt}, {args.warmup} warm-up, median of {args.steps}"
        ),
        details=info,
    )
    path = write_row(row, args.out)
    print(json.dumps({"tokens_per_s": result["tokens_per_s"], "mfu": mfu, "written": str(path)}))
    return 0 if not math.isnan(result["tokens_per_s"]) else 1


if __name__ == "__main__":
    sys.exit(main())
