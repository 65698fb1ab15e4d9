"""The dry run's memory plan against measured CPU runs of a tiny Qwen2 (activations and log-probs).

    python bench/bench_memory_plan.py                      # the four cases below, ~4 min, peak ~6 GB RSS
    python bench/bench_memory_plan.py --cases act          # one case family
    python bench/bench_memory_plan.py --response 64 --prompt 64 --vocab 4096   # smoke size

One update forward + backward of today's full-vocabulary path (``TextPolicyPath.forward``:
the model's [B, R, V] logits into ``response_logp_and_entropy``, with entropy), fp32, torch
engine, batch 1, with and without gradient checkpointing, for two shapes:

* ``vocab``: hidden 128, 2 layers, the real 151,936-token vocabulary, prompt 1024 + response
  2000: the log-prob tensors dominate;
* ``act``: hidden 512, intermediate 1536, 4 layers, vocabulary 8192, same lengths: the decoder's
  activations dominate.

Measured, exactly and independent of the allocator: the peak of live tensor bytes over forward +
backward (``mm_gmpo.testing.memory.LiveTensorBytes``; parameters and their gradient buffers,
which the plan counts as model states, are allocated before and excluded) and the bytes autograd saves for backward, split into activations and the
vocabulary-wide tensors (``SavedTensorBytes``). Planned: the plan's ``activations`` and
``log-probs`` rows for the same config (``mm_gmpo.train.memory_plan.plan_memory``). Writes
``memory_plan.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_OUT, machine_info, pin_threads  # noqa: E402

from mm_gmpo.testing import tiny_qwen2_config  # noqa: E402
from mm_gmpo.testing.memory import LiveTensorBytes, SavedTensorBytes  # noqa: E402
from mm_gmpo.train.config import load_config  # noqa: E402
from mm_gmpo.train.memory_plan import GIB, plan_memory  # noqa: E402

SHAPES = {
    "vocab": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "vocab_size": 151936},
    "act": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 4, "vocab_size": 8192},
}


def plan_for(overrides: dict, prompt: int, response: int, checkpointing: bool) -> tuple[int, int]:
    """The plan's activation and log-prob bytes for this tiny model and micro-batch."""
    cfg = load_config(
        None,
        [
            "model.path=tiny:qwen2",
            f"model.tiny_overrides={json.dumps(overrides)}",
            "model.dtype=fp32",
            f"model.gradient_checkpointing={str(checkpointing).lower()}",
            f"data.max_prompt_len={prompt}",
            f"rollout.max_new_tokens={response}",
            "rollout.engine=hf",
            "train.engine=torch",
            "train.micro_batch_size=1",
            "train.logit_chunk=0",
        ],
    )
    plan = plan_memory(cfg, world=1)
    return plan.row("activations").nbytes or 0, plan.row("log-probs").nbytes or 0


def measure(overrides: dict, prompt: int, response: int, checkpointing: bool) -> dict:
    from transformers import Qwen2ForCausalLM

    from mm_gmpo.text.path import TextPolicyPath
    from mm_gmpo.train.collate import collate_prompt_response

    vocab = overrides["vocab_size"]
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(tiny_qwen2_config(**overrides, max_position_embeddings=prompt + response + 8))
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    path = TextPolicyPath(types.SimpleNamespace(pad_token_id=0, eos_token_id=0), "none", prompt)
    g = torch.Generator().manual_seed(0)
    batch = collate_prompt_response(
        [torch.randint(1, vocab, (prompt,), generator=g).tolist()],
        [torch.randint(1, vocab, (response,), generator=g).tolist()],
        0,
    )
    for p in model.parameters():  # gradients are model states in the plan: allocate them outside
        p.grad = torch.zeros_like(p)
    start = time.perf_counter()
    with LiveTensorBytes() as live:
        with SavedTensorBytes(model.parameters(), split=lambda t: t.shape[-1] == vocab) as saved:
            logp, _ = path.forward(model, batch, temperature=1.0)  # [1, R]
        loss = -(logp * batch.response_mask).sum() / batch.response_mask.sum()
        loss.backward()
    wall = time.perf_counter() - start
    act_plan, lp_plan = plan_for(overrides, prompt, response, checkpointing)
    layer_inputs_only = saved.other  # with checkpointing: the layers' inputs (what stays saved)
    del model, batch, logp, loss
    gc.collect()
    return {
        "measured_peak_gib": round(live.peak / GIB, 4),
        "planned_activations_plus_logprobs_gib": round((act_plan + lp_plan) / GIB, 4),
        "peak_ratio_measured_over_planned": round(live.peak / (act_plan + lp_plan), 3),
        "saved_activations_gib": round(layer_inputs_only / GIB, 4),
        "planned_activations_gib": round(act_plan / GIB, 4),
        "saved_vocab_wide_gib": round(saved.matched / GIB, 4),
        "planned_logprobs_gib": round(lp_plan / GIB, 4),
        "wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--prompt", type=int, default=1024)
    ap.add_argument("--response", type=int, default=2000)
    ap.add_argument("--vocab", type=int, default=None, help="override the vocabulary of every case")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    threads = pin_threads()
    results = []
    for case in args.cases:
        overrides = dict(SHAPES[case])
        if args.vocab:
            overrides["vocab_size"] = args.vocab
        for checkpointing in (False, True):
            row = {
                "case": case,
                "shape": overrides,
                "prompt": args.prompt,
                "response": args.response,
                "gradient_checkpointing": checkpointing,
                **measure(overrides, args.prompt, args.response, checkpointing),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"threads": threads, "machine": machine_info(), "results": results}
    (out / "memory_plan.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
