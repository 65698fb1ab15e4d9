"""Rollout throughput: vLLM engine vs the transformers engine, same model, prompts, n, lengths.

    bash scripts/setup_vllm_env.sh
    .venv-vllm/bin/python bench/bench_rollout.py                   # tiny fp32 Qwen2 on CPU
    .venv-vllm/bin/python bench/bench_rollout.py --vl              # tiny fp32 Qwen2.5-VL, one or two pictures a prompt
    .venv-vllm/bin/python bench/bench_rollout.py --model /path/to/Qwen2.5-Math-1.5B --dtype bfloat16

With ``--vl`` the prompts are the VL path's (geometry template, every fourth prompt with two
pictures, picture sizes varying so the image-token counts differ); both engines get them from
the same :class:`~mm_gmpo.vl.path.VLPolicyPath`: the HF engine through its image-aware
collator, vLLM through the path's request builder.

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


def _timed(engine, prompts, sampling, repeats: int, before_each=None) -> dict[str, float]:
    """Warm-up, then ``repeats`` timed calls; ``before_each`` (untimed) runs before every call."""
    engine.generate(prompts, sampling)  # warm-up
    tokens, seconds = 0, 0.0
    for _ in range(repeats):
        if before_each is not None:
            before_each()
        t0 = time.perf_counter()
        rollout = engine.generate(prompts, sampling)
        seconds += time.perf_counter() - t0
        tokens += sum(len(r) for r in rollout.response_ids)
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}


def _picture(width: int, height: int, seed: int):
    """A non-constant picture (PNG bytes): real patches, not a flat colour."""
    import io

    import numpy as np
    from PIL import Image

    base = np.add.outer(np.arange(height) * 3, np.arange(width) * 5)[..., None] + np.array(
        [seed, 2 * seed, 7]
    )
    buf = io.BytesIO()
    Image.fromarray((base % 256).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _vl_setup(model_dir: str | None, dtype, n_prompts: int, hf_batch_size: int):
    """Tiny (or given) Qwen2.5-VL, its VL path, prompts with pictures, and both engines' inputs."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from mm_gmpo.data.records import Record
    from mm_gmpo.rollout.hf import HFGenerateEngine
    from mm_gmpo.vl.model import load_vl_processor
    from mm_gmpo.vl.path import VLPolicyPath

    if model_dir is None:
        from mm_gmpo.testing import build_tiny_qwen2_5_vl

        model_dir = str(build_tiny_qwen2_5_vl(os.path.join(tempfile.mkdtemp(), "tiny_vl"), seed=0))
    processor = load_vl_processor(model_dir, min_pixels=None, max_pixels=None)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=dtype)
    path = VLPolicyPath(processor, model, "geometry", 1024)
    records = []
    for i in range(n_prompts):
        sizes = [(56 + 28 * (i % 4), 84 + 14 * (i % 3))] + ([(112, 56)] if i % 4 == 3 else [])
        text = " ".join("<image>" for _ in sizes) + f" Question {i}: find the angle x."
        records.append(
            Record(f"q{i}", text, "1", images=[_picture(w, h, i + k) for k, (w, h) in enumerate(sizes)])
        )
    prompts = [path.build_prompt(r) for r in records]
    hf = HFGenerateEngine(model, path.pad_id, batch_size=hf_batch_size, collate=path.collate_for_generate)
    return model_dir, model, prompts, hf, path.vllm_requests()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model dir (default: the tiny local Qwen2)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hf-batch-size", type=int, default=64, help="prompts per HF generate() call")
    ap.add_argument("--vl", action="store_true", help="tiny Qwen2.5-VL, prompts with pictures")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mm_gmpo.rollout.base import PromptInput, SamplingSettings
    from mm_gmpo.rollout.hf import HFGenerateEngine
    from mm_gmpo.rollout.vllm import VLLMEngine

    dtype = getattr(torch, args.dtype)
    requests = None
    if args.vl:
        model_dir, model, prompts, hf_engine, requests = _vl_setup(
            args.model, dtype, args.prompts, args.hf_batch_size
        )
    else:
        model_dir = args.model
        if model_dir is None:
            from mm_gmpo.testing import build_tiny_qwen2

            model_dir = str(build_tiny_qwen2(os.path.join(tempfile.mkdtemp(), "tiny"), seed=0))
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        prompts = [
            PromptInput(tok(f"Question {i}: what is {i} + {2 * i + 7}? Think step by step.")["input_ids"])
            for i in range(args.prompts)
        ]
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        hf_engine = HFGenerateEngine(model, pad, batch_size=args.hf_batch_size)
    if torch.cuda.is_available():
        model.cuda()
    # One stop id (the last embedding row) that the model seldom samples: nearly every response
    # runs to max_new_tokens, and tokens/s counts what each engine actually returned.
    never = model.get_input_embeddings().weight.shape[0] - 1
    sampling = SamplingSettings(
        n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, stop_token_ids=(never,), seed=0
    )
    hf = _timed(hf_engine, prompts, sampling, args.repeats)
    t0 = time.perf_counter()
    engine = VLLMEngine(
        model_dir,
        requests=requests,
        dtype=args.dtype,
        enforce_eager=not torch.cuda.is_available(),
        max_model_len=1024,
        seed=0,
    )
    startup = time.perf_counter() - t0
    # Caches emptied before each timed call, as a weight sync does between training steps: the
    # repeated prompts must not be served from the prefix / encoder / processor caches.
    fast = _timed(engine, prompts, sampling, args.repeats, before_each=engine.reset_caches)
    fast["startup_s"] = round(startup, 1)
    engine.close()
    common = {
        "model": "qwen2_5_vl" if args.vl else "qwen2",
        "images": sum(len(p.multimodal["images"]) for p in prompts) if args.vl else 0,
        "prompts": args.prompts,
        "n": args.n,
        "max_new_tokens": args.max_new_tokens,
        "dtype": args.dtype,
    }
    print(json.dumps({"engine": "hf", **common, **hf}))
    print(json.dumps({"engine": "vllm", **common, **fast}))
    print(json.dumps({"vllm_over_hf_tokens_per_s": round(fast["tokens_per_s"] / hf["tokens_per_s"], 2)}))


if __name__ == "__main__":
    main()
