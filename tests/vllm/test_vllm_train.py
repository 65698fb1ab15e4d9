"""A short text training run with the vLLM engine as the loop's rollout engine."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip(
    "vllm",
    reason="vLLM is not installed here; these tests run in .venv-vllm (bash scripts/test_vllm.sh)",
)

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from mm_gmpo.data.records import Record  # noqa: E402
from mm_gmpo.text.path import TextPolicyPath  # noqa: E402
from mm_gmpo.train.config import load_config  # noqa: E402
from mm_gmpo.train.engine import OptimSettings, TorchEngine  # noqa: E402
from mm_gmpo.train.loop import Trainer  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(240)]


def digit_reward(texts, records, truncated):
    """Spread inside every group: the share of digits in the response."""
    rewards = [sum(c.isdigit() for c in t) / max(1, len(t)) for t in texts]
    return rewards, [float(r > 0.5) for r in rewards], {}


def _trainer(cfg, model, tok, vllm_engine) -> Trainer:
    """A text trainer on 12 addition prompts whose rollouts come from ``vllm_engine``."""
    records = [
        Record(id=f"r{i}", problem=f"What is {i} + {i + 3}?", answer=str(2 * i + 3)) for i in range(12)
    ]
    stop = sorted({tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")})
    return Trainer(
        cfg,
        path=TextPolicyPath(tok, cfg.data.template, cfg.data.max_prompt_len),
        engine=TorchEngine(model, OptimSettings(lr=cfg.optim.lr, grad_clip=cfg.optim.grad_clip)),
        rollout_engine=vllm_engine,
        score=digit_reward,
        train_records=records,
        stop_token_ids=stop,
        tokenizer=tok,
    )


def test_training_run_with_vllm_rollouts_changes_weights_and_stays_in_sync(tiny_dir, vllm_engine, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    vllm_engine.sync_weights(model)  # other tests may have left other weights in the engine
    cfg = load_config(
        None,
        [
            f"train.output_dir={tmp_path / 'run'}",
            "data.template=none",
            "rollout.engine=vllm",
            "rollout.n=4",
            "rollout.max_new_tokens=8",
            "train.prompts_per_step=4",
            "train.micro_batch_size=8",
            "optim.lr=1e-2",
        ],
    )
    trainer = _trainer(cfg, model, tok, vllm_engine)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    history = [trainer.rl_step() for _ in range(3)]
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []
    for m in history:
        assert m["rows_trained"] == 16
        # every step samples from the weights the previous step synced
        assert m["sampler_logp_absdiff_max"] < 1e-4, m["sampler_logp_absdiff_max"]
    assert trainer.state.step == 3


def test_lora_training_run_with_vllm_rollouts_samples_from_the_merged_adapters(
    tiny_dir, vllm_engine, tmp_path
):
    """The LoRA twin, built through ``apply_lora``: the engine follows the adapters, the base stays."""
    from mm_gmpo.lora import apply_lora

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    cfg = load_config(
        None,
        [
            f"train.output_dir={tmp_path / 'run'}",
            "data.template=none",
            "model.lora_rank=8",
            "model.lora_alpha=16",
            "rollout.engine=vllm",
            "rollout.n=4",
            "rollout.max_new_tokens=8",
            "train.prompts_per_step=4",
            "train.micro_batch_size=8",
            "optim.lr=5e-2",
        ],
    )
    model = apply_lora(cfg, AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32))
    vllm_engine.sync_weights(model)
    trainer = _trainer(cfg, model, tok, vllm_engine)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    history = [trainer.rl_step() for _ in range(3)]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)  # adapters moved, the base is bit-identical
    assert any("lora_B" in n for n in changed)  # so the merged weights differ from the base
    for m in history:
        # steps 2 and 3 sample from merged weights that include trained adapters
        assert m["sampler_logp_absdiff_max"] < 1e-4, m["sampler_logp_absdiff_max"]
