"""Rollout throughput: vLLM engine vs the transformers engine, same model, prompts, n, lengths.

    bash scripts/setup_vllm_env.sh
    .venv-vllm/bin/python bench/bench_rollout.py                   # tiny fp32 Qwen2 on CPU
    .venv-vllm/bin/python bench/bench_rollout.py --model /path/to/Qwen2.5-Math-1.5B --dtype bfloat16

Runs in .venv-vllm (the only environment holding vLLM; its transformers drives the HF engine
too). Both engines get one warm-up call, then ``--repeats`` timed calls; tokens/s counts the
response tokens returned (stop tokens included). The responses are sampled, so both engines
are given a single rarely-sampled stop id so nearly every response runs to
``--max-new-tokens`` (tokens/s counts what came back, so the small difference is accounted for). Prints one JSON line per engine and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def _timed(engine, prompts, sampling, repeats: int) -> dict[str, float]:
    engine.generate(prompts, sampling)  # warm-up
    tokens, seconds = 0, 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        rollout = engine.generate(prompts, sampling)
        seconds += time.perf_counter() - t0
        tokens += sum(len(r) for r in rollout.response_ids)
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model dir (default: the tiny local Qwen2)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hf-batch-size", type=int, default=64, help="prompts per HF generate() call")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mm_gmpo.rollout.base import PromptInput, SamplingSettings
    from mm_gmpo.rollout.hf import HFGenerateEngine
    from mm_gmpo.rollout.vllm import VLLMEngine

    model_dir = args.model
    if model_dir is None:
        from mm_gmpo.testing import build_tiny_qwen2

        model_dir = str(build_tiny_qwen2(os.path.join(tempfile.mkdtemp(), "tiny"), seed=0))
    tok = AutoTokenizer.from_pretrained(model_dir)
    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    if torch.cuda.is_available():
        model = model.cuda()
    prompts = [
        PromptInput(tok(f"Question {i}: what is {i} + {2 * i + 7}? Think step by step.")["input_ids"])
        for i in range(args.prompts)
    ]
    # One stop id (the last embedding row) that the model seldom samples: nearly every response
    # runs to max_new_tokens, and tokens/s counts what each engine actually returned.
    never = model.get_input_embeddings().weight.shape[0] - 1
    sampling = SamplingSettings(
        n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, stop_token_ids=(never,), seed=0
    )
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    hf = _timed(HFGenerateEngine(model, pad, batch_size=args.hf_batch_size), prompts, sampling, args.repeats)
    t0 = time.perf_counter()
    engine = VLLMEngine(
        model_dir, dtype=args.dtype, enforce_eager=not torch.cuda.is_available(), max_model_len=1024, seed=0
    )
    startup = time.perf_counter() - t0
    vl = _timed(engine, prompts, sampling, args.repeats)
    vl["startup_s"] = round(startup, 1)
    common = {
        "prompts": args.prompts,
        "n": args.n,
        "max_new_tokens": args.max_new_tokens,
        "dtype": args.dtype,
    }
    print(json.dumps({"engine": "hf", **common, **hf}))
    print(json.dumps({"engine": "vllm", **common, **vl}))
    print(json.dumps({"vllm_over_hf_tokens_per_s": round(vl["tokens_per_s"] / hf["tokens_per_s"], 2)}))


if __name__ == "__main__":
    main()
