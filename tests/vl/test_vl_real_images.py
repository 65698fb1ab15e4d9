"""Real pictures: 16 MathVision records (photos and diagrams of many sizes) through the VL path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mm_gmpo.rollout.base import SamplingSettings
from mm_gmpo.rollout.hf import HFGenerateEngine
from mm_gmpo.vl.model import load_vl_processor
from mm_gmpo.vl.path import VLPolicyPath


@pytest.fixture(scope="module")
def real_records(data_root: Path):
    from data_prep.mathvision import convert

    return convert(data_root / "mathvision", check_images=False)[:16]


def test_sixteen_real_records_collate_generate_and_match(real_records, vl_dir, vl_model, stop) -> None:
    # A larger budget than the tiny default (up to 64 tokens) so picture sizes stay different.
    processor = load_vl_processor(vl_dir, min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)
    path = VLPolicyPath(processor, vl_model, "geometry", max_prompt_len=2048)
    prompts = [path.build_prompt(r) for r in real_records]
    assert len(prompts) == 16
    grids = [tuple(g) for p in prompts for g in p.multimodal["image_grid_thw"].tolist()]
    assert len(set(grids)) >= 5, grids  # many different shapes in one batch
    for p in prompts:
        n_tokens = sum(t == path.image_token_id for t in p.input_ids)
        assert n_tokens * 4 == int(p.multimodal["image_grid_thw"].prod(dim=1).sum())

    engine = HFGenerateEngine(vl_model, path.pad_id, batch_size=16, collate=path.collate_for_generate)
    torch.manual_seed(0)
    rollout = engine.generate(prompts, SamplingSettings(n=1, max_new_tokens=4, stop_token_ids=stop))
    assert len(rollout) == 16
    batch = path.collate(rollout, list(range(16)))
    assert batch.extra["pixel_values"].shape[0] == sum(p.multimodal["pixel_values"].shape[0] for p in prompts)
    with torch.no_grad():
        logp, entropy = path.forward(vl_model, batch, 1.0)  # [16, R]
    for i, resp in enumerate(rollout.response_ids):
        assert torch.allclose(logp[i, : len(resp)], torch.tensor(rollout.sampler_logp[i]), atol=1e-5)
    assert torch.isfinite(entropy).all()
