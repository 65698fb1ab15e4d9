"""Two-rank worker (run by torchrun from test_logprobs_two_ranks.py): chunked log-probs under ZeRO-3.

The ranks hold different numbers of response tokens, so they need different numbers of LM-head
chunks; under ZeRO-3 every LM-head call all-gathers the partitioned weight, a collective. Each
rank runs one forward + backward of its rows through ``TextPolicyPath`` (chunked) and one
DeepSpeed step; rank 0 then compares the parameters with a single-process full-batch step
through the full-vocabulary path and writes a report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

CHUNK = 4
TEMPERATURE = 0.7
# (prompt length, response length) per rank: rank 0 has 20 response tokens (5 chunks), rank 1 has 3 (1)
ROWS = {0: [(5, 11), (3, 9)], 1: [(7, 3)]}
SETTINGS = dict(lr=1e-2, eps=1e-1, weight_decay=0.0, grad_clip=0.0)


def make_rows(vocab: int) -> dict[int, tuple[list[list[int]], list[list[int]]]]:
    gen = torch.Generator().manual_seed(0)
    out = {}
    for rank, shapes in ROWS.items():
        prompts = [torch.randint(0, vocab, (p,), generator=gen).tolist() for p, _ in shapes]
        responses = [torch.randint(0, vocab, (r,), generator=gen).tolist() for _, r in shapes]
        out[rank] = (prompts, responses)
    return out


def step(engine, tok, prompts, responses, chunk: int, denominator: float) -> None:
    from mm_gmpo.text.path import TextPolicyPath
    from mm_gmpo.train.collate import collate_prompt_response

    batch = collate_prompt_response(prompts, responses, tok.pad_token_id)
    logp, _ = TextPolicyPath(tok, "none", 64, logit_chunk=chunk).forward(engine.module, batch, TEMPERATURE)
    engine.backward((logp * batch.response_mask).sum() / denominator)
    engine.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mm_gmpo.train import dist
    from mm_gmpo.train.ds_engine import DeepSpeedEngine
    from mm_gmpo.train.engine import OptimSettings, TorchEngine

    dist.init_distributed()
    rank, world = dist.rank(), dist.world_size()
    assert world == 2, f"run with --nproc_per_node 2, got {world}"
    tok = AutoTokenizer.from_pretrained(args.model_dir)

    def load():
        return AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)

    rows = make_rows(load().config.vocab_size)
    tokens = sum(len(r) for _, responses in rows.values() for r in responses)
    settings = OptimSettings(**SETTINGS)
    engine = DeepSpeedEngine(load(), settings, zero_stage=3)
    # DeepSpeed averages the ranks' gradients: local sum / (global tokens / world) gives the full mean.
    step(engine, tok, *rows[rank], CHUNK, tokens / world)
    state = engine.state_dict_for_save()
    if dist.is_main():
        model = load()
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        reference = TorchEngine(model, settings)
        prompts = rows[0][0] + rows[1][0]
        responses = rows[0][1] + rows[1][1]
        step(reference, tok, prompts, responses, 0, float(tokens))
        ref_state = model.state_dict()
        report = {
            "param_diff": max(float((state[k] - ref_state[k]).abs().max()) for k in ref_state),
            "param_change": max(float((ref_state[k] - initial[k]).abs().max()) for k in ref_state),
        }
        args.out.write_text(json.dumps(report))
    dist.barrier()
    dist.shutdown()


if __name__ == "__main__":
    sys.exit(main())
