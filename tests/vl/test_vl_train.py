"""A short VL training run through the shared loop, and assembling the VL pieces from a config."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from mm_gmpo.data.records import Record
from mm_gmpo.data.synthetic_vl import make_square_records
from mm_gmpo.rollout.hf import HFGenerateEngine
from mm_gmpo.train.config import load_config
from mm_gmpo.train.engine import OptimSettings, TorchEngine
from mm_gmpo.train.loop import Trainer
from mm_gmpo.vl.build import build_vl_components
from mm_gmpo.vl.model import EASYR1_MAX_PIXELS, EASYR1_MIN_PIXELS, processor_pixel_limits, vision_tower


def digit_reward(texts, records, truncated):
    """A test reward with spread inside every group: the share of digits in the response."""
    rewards = [sum(c.isdigit() for c in t) / max(1, len(t)) for t in texts]
    return rewards, [float(r > 0.5) for r in rewards], {}


def _cfg(tmp_path, *overrides: str):
    return load_config(
        None,
        [
            "path=vl",
            "model.path=tiny:qwen2_5_vl",
            "model.dtype=fp32",
            "data.template=geometry",
            "data.max_prompt_len=512",
            f"train.output_dir={tmp_path / 'run'}",
            *overrides,
        ],
    )


def test_build_vl_components_from_config(tmp_path, vl_dir, mixed) -> None:
    model, processor, path, generate_collate = build_vl_components(_cfg(tmp_path), vl_dir)
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert processor.tokenizer.padding_side == "left"
    assert processor_pixel_limits(processor) == (4 * 28 * 28, 16 * 28 * 28)  # tiny keeps its budget
    assert all(p.requires_grad for p in model.parameters())
    batch = generate_collate([path.build_prompt(r) for r in mixed], path.pad_id)
    assert batch["image_grid_thw"].shape == (5, 3) and batch["mm_token_type_ids"].any()


def test_real_model_path_gets_the_easyr1_pixel_budget(tmp_path, vl_dir) -> None:
    cfg = _cfg(tmp_path, f"model.path={vl_dir}")
    _, processor, path, _ = build_vl_components(cfg, vl_dir)
    assert processor_pixel_limits(processor) == (EASYR1_MIN_PIXELS, EASYR1_MAX_PIXELS) == (262_144, 4_194_304)
    assert (path.min_pixels, path.max_pixels) == (EASYR1_MIN_PIXELS, EASYR1_MAX_PIXELS)


def test_freeze_vision_tower_and_checkpointing_from_config(vl_dir) -> None:
    cfg = SimpleNamespace(
        model=SimpleNamespace(
            path="tiny:qwen2_5_vl",
            dtype="fp32",
            freeze_vision_tower=True,
            gradient_checkpointing=True,
            min_pixels=None,
            max_pixels=None,
        ),
        data=SimpleNamespace(template="geometry", max_prompt_len=512, max_images_per_prompt=4),
    )
    model, _, _, _ = build_vl_components(cfg, vl_dir)
    tower = {id(p) for p in vision_tower(model).parameters()}
    assert tower and all(not p.requires_grad for p in vision_tower(model).parameters())
    assert all(p.requires_grad for p in model.parameters() if id(p) not in tower)
    assert model.is_activation_checkpointing


@pytest.mark.parametrize("freeze", [False, True], ids=["trainable-tower", "frozen-tower"])
def test_short_vl_run_changes_trainable_parameters(tmp_path, vl_dir, freeze) -> None:
    cfg = SimpleNamespace(
        model=SimpleNamespace(path="tiny:qwen2_5_vl", dtype="fp32", freeze_vision_tower=freeze),
        data=SimpleNamespace(template="geometry", max_prompt_len=512, max_images_per_prompt=4),
    )
    model, processor, path, generate_collate = build_vl_components(cfg, vl_dir)
    run_cfg = _cfg(
        tmp_path,
        "rollout.n=4",
        "rollout.max_new_tokens=6",
        "train.prompts_per_step=4",
        "train.micro_batch_size=6",  # micro-batches cut across groups
        "optim.lr=1e-2",
        "data.on_bad_record=skip",
    )
    records = make_square_records(6) + [Record("broken", "How many squares?", "1", images=[b""])]
    trainer = Trainer(
        run_cfg,
        path=path,
        engine=TorchEngine(model, OptimSettings(lr=run_cfg.optim.lr, grad_clip=1.0)),
        rollout_engine=HFGenerateEngine(model, path.pad_id, collate=generate_collate),
        score=digit_reward,
        train_records=records,
        stop_token_ids=[processor.tokenizer.convert_tokens_to_ids("<|im_end|>")],
        tokenizer=processor,
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
