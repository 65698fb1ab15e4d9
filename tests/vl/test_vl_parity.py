"""Log-prob parity: the training forward scores sampled responses exactly as ``generate`` drew them.

This is the test that catches a wrong mRoPE: with 1-D positions the training forward runs a
different model than the sampler, and GMPO's importance ratios start off-policy.
"""

from __future__ import annotations

import torch

from mm_gmpo.rollout.base import SamplingSettings
from mm_gmpo.rollout.hf import HFGenerateEngine

TEMPERATURE = 0.8  # as in the `sampled` fixture


def max_gap(path, model, rollout, batch) -> float:
    """Largest |trainer log-prob - sampler log-prob| over all response tokens."""
    with torch.no_grad():
        logp, _ = path.forward(model, batch, TEMPERATURE, with_entropy=False)  # [B, R]
    gaps = [
        (logp[i, : len(rollout.response_ids[i])] - torch.tensor(rollout.sampler_logp[i])).abs().max()
        for i in range(len(rollout))
    ]
    return float(torch.stack(gaps).max())


def test_batch_mixes_image_sizes_and_counts(sampled) -> None:
    prompts, rollout = sampled
    counts = [p.multimodal["image_grid_thw"].shape[0] for p in prompts]
    assert counts == [1, 2, 1, 1]
    grids = {tuple(g) for p in prompts for g in p.multimodal["image_grid_thw"].tolist()}
    assert len(grids) == 5  # every picture has its own patch grid
    assert len({len(p.input_ids) for p in prompts}) == 4  # so left padding differs per row
    assert len(rollout) == 8 and max(len(r) for r in rollout.response_ids) > 1


def test_training_forward_matches_sampler_logprobs(sampled, vl_path, vl_model) -> None:
    _, rollout = sampled
    batch = vl_path.collate(rollout, list(range(len(rollout))))
    assert batch.position_ids.shape == (3, len(rollout), batch.input_ids.shape[1])
    gap = max_gap(vl_path, vl_model, rollout, batch)
    print(f"max |trainer - sampler| log-prob: {gap:.3g}")
    assert gap < 1e-5


def test_parity_fails_without_mrope_positions(sampled, vl_path, vl_model) -> None:
    """Test of the test: drop the 3-D positions (1-D text positions instead) and parity breaks."""
    _, rollout = sampled
    batch = vl_path.collate(rollout, list(range(len(rollout))))
    batch.position_ids = (batch.attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # [B, L]: plain RoPE
    assert max_gap(vl_path, vl_model, rollout, batch) > 1e-4


def test_num_return_sequences_expands_each_prompts_images(sampled, vl_path, vl_model, stop) -> None:
    """generate(num_return_sequences=n) == each prompt repeated n times (same seed, same draws)."""
    prompts, _ = sampled
    engine = HFGenerateEngine(vl_model, vl_path.pad_id, batch_size=8, collate=vl_path.collate_for_generate)
    settings = dict(temperature=1.0, max_new_tokens=6, stop_token_ids=stop)
    torch.manual_seed(7)
    grouped = engine.generate(prompts, SamplingSettings(n=2, **settings))
    torch.manual_seed(7)
    repeated = engine.generate([p for p in prompts for _ in range(2)], SamplingSettings(n=1, **settings))
    assert grouped.response_ids == repeated.response_ids
    for a, b in zip(grouped.sampler_logp, repeated.sampler_logp):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-6)
    assert [mm is prompts[i // 2].multimodal for i, mm in enumerate(grouped.multimodal)] == [True] * 8
