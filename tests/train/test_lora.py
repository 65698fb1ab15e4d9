"""LoRA (model.lora_rank > 0): what gets adapters, what trains, what samples, what the reference is.

Each test fails if its part of the feature breaks: a base weight that moves, an optimizer
that holds base states, a rollout engine that samples from the base model, a reference that
keeps its adapters on, or target names that silently match nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel

from mm_gmpo.lora import adapters_disabled, apply_lora, resolve_targets
from mm_gmpo.testing import tiny_model_dir
from mm_gmpo.testing.dist import single_rank_group
from mm_gmpo.testing.modules import load_module_file
from mm_gmpo.testing.parity import nonzero_adapters
from mm_gmpo.train import build as build_module
from mm_gmpo.train.config import ConfigError, load_config
from mm_gmpo.train.engine import OptimSettings

HERE = Path(__file__).resolve().parent


H = load_module_file(HERE / "ds_two_rank_worker.py", "ds_two_rank_worker")


def lora_cfg(*overrides: str):
    return load_config(None, ["model.lora_rank=4", "model.lora_alpha=8", *overrides])


def text_model():
    return H.load_model(tiny_model_dir("qwen2"))


def vl_model():
    from mm_gmpo.vl.model import load_vl_model

    return load_vl_model(tiny_model_dir("qwen2_5_vl"), torch.float32)


def base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


# --- config and targets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lora_rank=-1", "model.lora_rank: must be >= 0"),
        ("model.lora_alpha=0", "model.lora_alpha: must be > 0"),
        ("model.lora_dropout=1.0", r"model.lora_dropout: must be in \[0, 1\)"),
        ("model.lora_target_modules=[q_proj, '']", "model.lora_target_modules: a list of module names"),
    ],
)
def test_bad_lora_settings_are_refused_with_the_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_rank_zero_is_full_fine_tuning() -> None:
    model = text_model()
    assert apply_lora(load_config(None, []), model) is model


def test_default_targets_every_language_model_linear_but_not_the_head() -> None:
    model = text_model()
    targets = resolve_targets(lora_cfg(), model)
    suffixes = {t.split(".")[-1] for t in targets}
    assert suffixes == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(targets) == 7 * model.config.num_hidden_layers
    wrapped = apply_lora(lora_cfg(), model)
    assert isinstance(wrapped, PeftModel)


def test_target_names_that_match_nothing_are_named() -> None:
    with pytest.raises(ConfigError, match=r"'nope', 'lm_head' match no linear layer"):
        apply_lora(lora_cfg("model.lora_target_modules=[q_proj, nope, lm_head]"), text_model())


def test_vision_tower_gets_adapters_only_when_unfrozen_and_named() -> None:
    model = vl_model()
    default = resolve_targets(lora_cfg("modality=vl"), model)
    assert default and not any(".visual." in t or t.startswith("visual") for t in default)
    with pytest.raises(ConfigError, match="'qkv'.*vision tower is frozen"):
        resolve_targets(
            lora_cfg("modality=vl", "model.freeze_vision_tower=true", "model.lora_target_modules=[qkv]"),
            model,
        )
    named = resolve_targets(lora_cfg("modality=vl", "model.lora_target_modules=[qkv, q_proj]"), model)
    assert any(".visual." in t for t in named) and any("language_model" in t for t in named)
    # gate_proj exists in the vision MLP too: a frozen tower keeps it out.
    frozen = resolve_targets(
        lora_cfg("modality=vl", "model.freeze_vision_tower=true", "model.lora_target_modules=[gate_proj]"),
        model,
    )
    assert frozen and not any(".visual." in t for t in frozen)


# --- training: only adapters move -------------------------------------------------------------


def _two_steps(engine, batch) -> None:
    for _ in range(2):
        H.micro_losses(engine, batch, list(range(H.BATCH)), 2, "gmpo", float(H.BATCH))
        engine.step()


def _adapter_numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_torch_engine_trains_only_adapters_and_keeps_the_base(checkpointing: bool) -> None:
    batch = H.build_batch(tiny_model_dir("qwen2"))
    model = apply_lora(lora_cfg(), text_model())
    before = base_weights(model)
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    cfg = lora_cfg(f"model.gradient_checkpointing={str(checkpointing).lower()}", "optim.lr=1e-2")
    engine = build_module.build_engine(cfg, model)
    assert engine.unwrapped_model().is_activation_checkpointing == checkpointing
    held = {id(p) for group in engine.optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for n, p in model.named_parameters() if "lora_" in n}
    _two_steps(engine, batch)
    after = base_weights(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    moved = [n for n, p in model.named_parameters() if "lora_" in n and not torch.equal(adapters[n], p)]
    assert len(moved) == len(adapters)  # A and B both move once B is non-zero
    states = sum(s["exp_avg"].numel() for s in engine.optimizer.state.values())
    assert states == _adapter_numel(model)


def test_checkpointing_gives_the_same_adapter_gradients() -> None:
    batch = H.build_batch(tiny_model_dir("qwen2"))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # LoRA's A is drawn at random
        model = apply_lora(lora_cfg(), text_model())
        nonzero_adapters(model)
        cfg = lora_cfg(f"model.gradient_checkpointing={str(checkpointing).lower()}")
        engine = build_module.build_engine(cfg, model)
        H.micro_losses(engine, batch, list(range(H.BATCH)), 1, "gmpo", float(H.BATCH))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 2 * 7 * 2
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])
    assert max(float(g.abs().max()) for g in grads[0].values()) > 0


@pytest.fixture(scope="module")
def single_rank():
    with single_rank_group():
        yield


def _innermost(optimizer):
    while hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


@pytest.mark.parametrize(
    "stage", [pytest.param(s, marks=pytest.mark.slow) for s in (0, 1, 2)] + [3]
)  # ~35 s each
def test_deepspeed_trains_only_adapters_and_keeps_the_base(single_rank, stage: int, tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    from mm_gmpo.train.ds_engine import DeepSpeedEngine

    batch = H.build_batch(tiny_model_dir("qwen2"))
    model = apply_lora(lora_cfg(), text_model())
    before = base_weights(model)
    n_adapter = _adapter_numel(model)
    engine = DeepSpeedEngine(model, OptimSettings(lr=1e-2), zero_stage=stage)
    _two_steps(engine, batch)
    states = sum(s["exp_avg"].numel() for s in _innermost(engine.optimizer).state.values())
    assert n_adapter <= states < n_adapter + 64  # adapters only (ZeRO pads its flat buffer a little)
    with engine.gathered_for_generation():
        after = base_weights(engine.unwrapped_model())
        adapters = {
            n: p.detach().clone() for n, p in engine.unwrapped_model().named_parameters() if "lora_B" in n
        }
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert all(float(a.abs().max()) > 0 for a in adapters.values())
    saved = engine.state_dict_for_save()
    if stage == 3:
        assert saved and all("lora_" in k for k in saved)
    engine.save_state(tmp_path)
    files = list(tmp_path.rglob("*model_states.pt"))
    assert files and sum(f.stat().st_size for f in files) < 2_000_000  # no copy of the base


# --- sampling and the reference ---------------------------------------------------------------


def test_hf_rollouts_sample_the_adapted_policy_and_the_trainer_agrees() -> None:
    from transformers import AutoTokenizer

    from mm_gmpo.rollout.base import SamplingSettings
    from mm_gmpo.rollout.hf import HFGenerateEngine
    from mm_gmpo.text.path import TextPolicyPath

    model_dir = tiny_model_dir("qwen2")
    tok = AutoTokenizer.from_pretrained(model_dir)
    path = TextPolicyPath(tok, "none", 64, 0)
    model = apply_lora(lora_cfg(), text_model())
    nonzero_adapters(model)
    engine = HFGenerateEngine(model, path.pad_id, batch_size=4)
    prompts = [path.build_prompt(r) for r in _records()]
    settings = SamplingSettings(n=2, temperature=0.9, max_new_tokens=8, stop_token_ids=(tok.eos_token_id,))
    torch.manual_seed(0)
    rollout = engine.generate(prompts, settings)
    batch = path.collate(rollout, list(range(len(rollout))))
    with torch.no_grad():
        adapted, _ = path.forward(model, batch, 0.9, with_entropy=False)  # [B, R]
        with adapters_disabled(model):
            base, _ = path.forward(model, batch, 0.9, with_entropy=False)  # [B, R]
        plain, _ = path.forward(text_model(), batch, 0.9, with_entropy=False)  # [B, R]
    mask = batch.response_mask.bool()
    sampler = torch.zeros_like(adapted)
    for i, row in enumerate(rollout.sampler_logp):
        sampler[i, : len(row)] = torch.tensor(row)
    assert (adapted - sampler)[mask].abs().max() < 1e-5  # the engine sampled the adapted model
    assert (adapted - base)[mask].abs().max() > 1e-2  # which is not the base model
    assert torch.equal(base[mask], plain[mask])  # adapters off == the starting policy (KL reference)


def _records():
    from mm_gmpo.data.records import Record

    return [Record(str(i), f"What is {i} + {i}?", str(2 * i)) for i in range(3)]


def test_zero3_lora_chunked_logprobs_step_equals_the_torch_engine(single_rank) -> None:
    """Frozen, partitioned LM head (LoRA under ZeRO-3) in the chunked log-prob path: the same
    adapter update as the torch engine, so its gradient reaches the decoder intact."""
    pytest.importorskip("deepspeed")
    from transformers import AutoTokenizer

    from mm_gmpo.text.path import TextPolicyPath
    from mm_gmpo.train.collate import collate_prompt_response
    from mm_gmpo.train.ds_engine import DeepSpeedEngine
    from mm_gmpo.train.engine import TorchEngine

    model_dir = tiny_model_dir("qwen2")
    path = TextPolicyPath(AutoTokenizer.from_pretrained(model_dir), "none", 64, logit_chunk=5)
    gen = torch.Generator().manual_seed(3)
    batch = collate_prompt_response(
        [torch.randint(0, 480, (6,), generator=gen).tolist() for _ in range(4)],
        [torch.randint(0, 480, (3 + i,), generator=gen).tolist() for i in range(4)],
        0,
    )
    settings = OptimSettings(**H.SETTINGS_LINEAR)
    adapters = []
    for make in (lambda m: TorchEngine(m, settings), lambda m: DeepSpeedEngine(m, settings, zero_stage=3)):
        torch.manual_seed(0)
        model = apply_lora(lora_cfg(), text_model())
        nonzero_adapters(model)
        engine = make(model)
        logp, _ = path.forward(engine.module, batch, 1.0)  # [B, R]
        engine.backward(-(logp * batch.response_mask).sum() / batch.response_mask.sum())
        engine.step()
        with engine.gathered_for_generation():
            adapters.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n})
    start = adapters[0]
    assert all(torch.allclose(adapters[0][n], adapters[1][n], atol=1e-6) for n in start)
