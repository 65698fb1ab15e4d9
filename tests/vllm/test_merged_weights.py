"""The LoRA policy's weight stream for the vLLM sync, without vLLM (runs in the main environment).

What vLLM receives from a peft-wrapped policy: the plain transformers model's names, in its
order, with the adapters merged to exactly the values ``merge_and_unload()`` gives, while the
trainer's model stays bit-identical (the stream merges into copies). The engine itself takes
this stream in tests/vllm/test_vllm_lora.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

peft = pytest.importorskip("peft")

from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2ForCausalLM  # noqa: E402

from mm_gmpo.rollout.merged_weights import adapted_base_model, iter_merged_weights  # noqa: E402
from mm_gmpo.rollout.vllm import iter_policy_weights  # noqa: E402
from mm_gmpo.testing import tiny_qwen2_5_vl_config, tiny_qwen2_config  # noqa: E402
from mm_gmpo.testing.dist import single_rank_group  # noqa: E402
from mm_gmpo.testing.parity import nonzero_adapters  # noqa: E402


def tiny_text(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return Qwen2ForCausalLM(tiny_qwen2_config()).to(dtype)


def with_lora(model: nn.Module, **config) -> nn.Module:
    """``model`` wrapped with a rank-4 adapter whose ``lora_B`` is non-zero (peft starts it at
    zero, which would make the merged model equal the base)."""
    lora = peft.LoraConfig(r=4, lora_alpha=8, **{"target_modules": "all-linear", **config})
    return nonzero_adapters(peft.get_peft_model(model, lora), seed=1)


class FakeEngine(nn.Module):
    """Stands in for DeepSpeed's / DDP's wrapper: the policy under ``.module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


class FakeCompiled(nn.Module):
    """Stands in for torch.compile's wrapper: the policy under ``._orig_mod``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._orig_mod = module


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stream_is_merge_and_unload_under_plain_names_and_leaves_the_model_untouched(dtype):
    plain_names = [name for name, _ in tiny_text(dtype).named_parameters()]
    policy = with_lora(tiny_text(dtype))
    expected = copy.deepcopy(policy).merge_and_unload().state_dict()
    before = snapshot(policy)

    stream = list(iter_policy_weights(policy))

    assert [name for name, _ in stream] == plain_names  # no base_model.model. / base_layer / lora_*
    for name, tensor in stream:
        assert tensor.dtype == dtype
        assert torch.equal(tensor, expected[name]), name
    base = tiny_text(dtype).state_dict()
    adapted = [name for name, tensor in stream if not torch.equal(tensor, base[name])]
    assert len(adapted) == 2 * 7  # every linear layer of both blocks carries a live adapter
    after = snapshot(policy)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], before[name]) for name in before)  # bit-identical
    assert not any(getattr(m, "merged", False) for m in policy.modules())


def test_merge_unmerge_round_trip_is_not_bit_identical():
    """Why the stream merges out of place: peft's in-place merge + unmerge moves the base."""
    policy = with_lora(tiny_text())
    before = snapshot(policy)
    policy.merge_adapter()
    policy.unmerge_adapter()
    changed = [name for name, p in policy.named_parameters() if not torch.equal(p, before[name])]
    assert changed and all("base_layer" in name for name in changed)


def test_wrappers_and_adapter_states():
    policy = with_lora(tiny_text())
    merged = dict(iter_merged_weights(policy))
    for wrapped in (FakeEngine(policy), FakeCompiled(policy), FakeEngine(FakeCompiled(policy))):
        stream = dict(iter_policy_weights(wrapped))
        assert stream.keys() == merged.keys()
        assert all(torch.equal(stream[name], merged[name]) for name in merged)
    # disabled adapters (the forward runs the base): the stream is the base too
    base = tiny_text().state_dict()
    with policy.disable_adapter():
        assert all(torch.equal(t, base[n]) for n, t in iter_policy_weights(policy))
    # an adapter peft already merged in place is not added twice
    policy.merge_adapter()
    assert all(torch.equal(t, merged[n]) for n, t in iter_policy_weights(policy))


def test_plain_model_stream_is_unchanged():
    model = tiny_text()
    assert adapted_base_model(model) is None
    stream = list(iter_policy_weights(FakeEngine(model)))
    assert [(n, t.data_ptr()) for n, t in stream] == [(n, p.data_ptr()) for n, p in model.named_parameters()]


def test_vl_stream_uses_the_vl_names():
    make = lambda: Qwen2_5_VLForConditionalGeneration(tiny_qwen2_5_vl_config())  # noqa: E731
    torch.manual_seed(0)
    plain = make()
    torch.manual_seed(0)
    policy = with_lora(make(), target_modules=["q_proj", "down_proj", "qkv", "proj"])
    expected = copy.deepcopy(policy).merge_and_unload().state_dict()
    stream = list(iter_policy_weights(policy))
    assert [n for n, _ in stream] == [n for n, _ in plain.named_parameters()]
    assert all(torch.equal(t, expected[n]) for n, t in stream)
    changed = {n for n, t in stream if not torch.equal(t, plain.state_dict()[n])}
    assert any(n.startswith("model.visual.") for n in changed)
    assert any(n.startswith("model.language_model.") for n in changed)


def test_unmergeable_adapters_are_refused_clearly():
    dora = with_lora(tiny_text(), use_dora=True)
    with pytest.raises(ValueError, match="only plain LoRA"):
        list(iter_policy_weights(dora))
    tied = with_lora(tiny_text(), target_modules=["embed_tokens"])  # the tiny Qwen2 ties lm_head to it
    with pytest.raises(ValueError, match="tied"):
        list(iter_policy_weights(tied))


@pytest.fixture()
def single_rank():
    """A world-size-1 gloo group for a DeepSpeed engine, removed afterwards."""
    with single_rank_group():
        yield


def test_zero3_partitioned_policy_streams_the_full_merged_weights(single_rank):
    """Under ZeRO-3 each LoRA layer's base weight and factors are gathered together, merged into
    a copy and released: full tensors come out, the partitions stay as they were."""
    pytest.importorskip("deepspeed")
    from mm_gmpo.train.ds_engine import DeepSpeedEngine
    from mm_gmpo.train.engine import OptimSettings

    plain_names = [name for name, _ in tiny_text().named_parameters()]
    policy = with_lora(tiny_text())
    expected = copy.deepcopy(policy).merge_and_unload().state_dict()
    engine = DeepSpeedEngine(policy, OptimSettings(lr=1e-3), zero_stage=3)
    model = engine.unwrapped_model()
    partitions = {n: p.ds_tensor.clone() for n, p in model.named_parameters()}  # this rank's shards
    assert all(p.numel() == 0 for p in model.parameters())  # partitioned: nothing held in full

    stream = list(iter_policy_weights(model))

    assert [name for name, _ in stream] == plain_names
    assert all(torch.equal(tensor, expected[name]) for name, tensor in stream)
    assert all(
        p.numel() == 0 and torch.equal(p.ds_tensor, partitions[n]) for n, p in model.named_parameters()
    )
