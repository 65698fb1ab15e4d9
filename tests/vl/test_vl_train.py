"""A short VL training run through the shared loop, and assembling the VL pieces from a config."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from mm_gmpo.data.records import Record
from mm_gmpo.data.synthetic_vl import make_square_records
from mm_gmpo.rollout.hf import HFGenerateEngine
from mm_gmpo.train.build import build_engine
from mm_gmpo.train.config import load_config
from mm_gmpo.train.engine import OptimSettings, TorchEngine
from mm_gmpo.train.loop import Trainer
from mm_gmpo.vl.build import build_parts
from mm_gmpo.vl.model import EASYR1_MAX_PIXELS, EASYR1_MIN_PIXELS, processor_pixel_limits, vision_tower


def digit_reward(texts, records, truncated):
    """A test reward with spread inside every group: the share of digits in the response."""
    rewards = [sum(c.isdigit() for c in t) / max(1, len(t)) for t in texts]
    return rewards, [float(r > 0.5) for r in rewards], {}


def _cfg(tmp_path, *overrides: str):
    return load_config(
        None,
        [
            "modality=vl",
            "model.path=tiny:qwen2_5_vl",
            "model.dtype=fp32",
            "data.template=geometry",
            "data.max_prompt_len=512",
            f"train.output_dir={tmp_path / 'run'}",
            *overrides,
        ],
    )


def test_build_vl_parts_from_config(tmp_path, vl_dir, mixed) -> None:
    parts = build_parts(_cfg(tmp_path), vl_dir)
    model, processor, path, generate_collate = parts.model, parts.saveable, parts.path, parts.generate_collate
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert processor.tokenizer.padding_side == "left"
    assert processor_pixel_limits(processor) == (4 * 28 * 28, 16 * 28 * 28)  # tiny keeps its budget
    assert all(p.requires_grad for p in model.parameters())
    batch = generate_collate([path.build_prompt(r) for r in mixed], path.pad_id)
    assert batch["image_grid_thw"].shape == (5, 3) and batch["mm_token_type_ids"].any()


def test_real_model_path_gets_the_easyr1_pixel_budget(tmp_path, vl_dir) -> None:
    cfg = _cfg(tmp_path, f"model.path={vl_dir}")
    parts = build_parts(cfg, vl_dir)
    processor, path = parts.saveable, parts.path
    assert processor_pixel_limits(processor) == (EASYR1_MIN_PIXELS, EASYR1_MAX_PIXELS) == (262_144, 4_194_304)
    assert (path.min_pixels, path.max_pixels) == (EASYR1_MIN_PIXELS, EASYR1_MAX_PIXELS)


def test_freeze_vision_tower_and_checkpointing_from_config(tmp_path, vl_dir) -> None:
    cfg = _cfg(tmp_path, "model.freeze_vision_tower=true", "model.gradient_checkpointing=true")
    model = build_parts(cfg, vl_dir).model
    assert not model.is_activation_checkpointing  # the engine owns checkpointing, not the loader
    build_engine(cfg, model)
    tower = {id(p) for p in vision_tower(model).parameters()}
    assert tower and all(not p.requires_grad for p in vision_tower(model).parameters())
    assert all(p.requires_grad for p in model.parameters() if id(p) not in tower)
    assert model.is_activation_checkpointing


@pytest.mark.parametrize("freeze", [False, True], ids=["trainable-tower", "frozen-tower"])
def test_short_vl_run_changes_trainable_parameters(tmp_path, vl_dir, freeze) -> None:
    run_cfg = _cfg(
        tmp_path,
        f"model.freeze_vision_tower={str(freeze).lower()}",
        "rollout.n=4",
        "rollout.max_new_tokens=6",
        "train.prompts_per_step=4",
        "train.micro_batch_size=6",  # micro-batches cut across groups
        "optim.lr=1e-2",
        "data.on_bad_record=skip",
    )
    parts = build_parts(run_cfg, vl_dir)
    model, processor, path, generate_collate = parts.model, parts.saveable, parts.path, parts.generate_collate
    records = make_square_records(6) + [Record("broken", "How many squares?", "1", images=[b""])]
    trainer = Trainer(
        run_cfg,
        path=path,
        engine=TorchEngine(model, OptimSettings(lr=run_cfg.optim.lr, grad_clip=1.0)),
        rollout_engine=HFGenerateEngine(model, path.pad_id, collate=generate_collate),
        score=digit_reward,
        train_records=records,
        stop_token_ids=[processor.tokenizer.convert_tokens_to_ids("<|im_end|>")],
        tokenizer=processor.tokenizer,
        saveable=processor,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(0)
    metrics = [trainer.rl_step() for _ in range(2)]  # 8 picks of 7 records: the broken one comes up
    assert trainer.state.skipped_records >= 1 and path.bad_records["image:empty"] >= 1
    assert all(m["sampler_logp_absdiff_max"] < 1e-4 for m in metrics)
    tower = {n for n, _ in vision_tower(model).named_parameters(prefix="model.visual")}
    assert tower <= set(before)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed - tower, "no language-model parameter changed"
    if freeze:
        assert not changed & tower
    else:
        assert changed & tower


def test_short_vl_lora_run_trains_adapters_only_with_the_adapter_free_reference(
    tmp_path, monkeypatch
) -> None:
    """The whole build path (registry, engine, reference, rollouts) on the VL model with LoRA."""
    from mm_gmpo.train import build as build_module

    monkeypatch.setattr(build_module, "make_score_fn", lambda cfg: (digit_reward, None))
    cfg = _cfg(
        tmp_path,
        "data.train=synthetic:squares",
        "data.synthetic_train_size=8",
        "model.lora_rank=4",
        "model.freeze_vision_tower=true",
        "model.gradient_checkpointing=true",
        "loss.kl_coef=0.1",
        "rollout.n=4",
        "rollout.max_new_tokens=6",
        "train.prompts_per_step=2",
        "train.micro_batch_size=4",
        "optim.lr=5e-2",
        "train.progress=false",
        "train.log_tensorboard=false",
    )
    run = build_module.build_run(cfg)
    try:
        model = run.trainer.engine.unwrapped_model()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        torch.manual_seed(0)
        metrics = [run.trainer.rl_step() for _ in range(2)]
    finally:
        run.close()
    assert run.trainer.reference is run.trainer.engine.module  # no second copy of the model
    assert all(m["sampler_logp_absdiff_max"] < 1e-4 for m in metrics)  # rollouts from the adapted model
    assert metrics[0]["ref_kl"] == pytest.approx(0.0, abs=1e-9)  # B = 0: adapted == base at first
    assert metrics[1]["ref_kl"] > 0  # after one update the adapters are on, the reference is not
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all("lora_" in n for n in changed)
