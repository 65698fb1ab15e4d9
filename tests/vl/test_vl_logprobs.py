"""Chunked response log-probs on the VL path (images, 3-D mRoPE positions, banned vision tokens).

Same log-probs, entropy and gradients (every parameter: vision tower, merger, embeddings, the
untied LM head) as the full-vocabulary reference, with a response that holds a banned token.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mm_gmpo.vl.model import load_vl_model
from mm_gmpo.vl.path import VLPolicyPath

TOL = 1e-6  # of the largest |value| of each compared tensor (fp32)


@pytest.fixture(scope="module")
def trainable(vl_dir):
    """Its own copy: these tests write gradients."""
    return load_vl_model(vl_dir, torch.float32)


@pytest.fixture(scope="module")
def rollout_with_banned(sampled, vl_path):
    """The sampled rollout, one response token replaced by <|image_pad|> (banned in responses)."""
    _, rollout = sampled
    responses = [list(r) for r in rollout.response_ids]
    longest = max(range(len(responses)), key=lambda i: len(responses[i]))
    responses[longest][1] = vl_path.image_token_id
    assert vl_path.image_token_id in vl_path.banned_token_ids
    return dataclasses.replace(rollout, response_ids=responses), longest


def _run(model, path, batch, temperature):
    model.zero_grad(set_to_none=True)
    logp, entropy = path.forward(model, batch, temperature)  # [B, R] each
    finite = logp.detach().abs() < 1e20  # a banned token's log-prob is ~-1e30 in both paths
    weights = torch.randn(logp.shape, generator=torch.Generator().manual_seed(3))  # [B, R]
    (logp * weights * batch.response_mask * finite).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), entropy, grads


def _close(new: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    scale = max(1.0, float(ref.abs().max()))
    gap = float((new - ref).abs().max())
    assert gap <= TOL * scale, f"{what}: max |diff| {gap:.3g} over {TOL * scale:.3g}"


@pytest.mark.parametrize("last_chunk", ["full", "ragged"])
def test_vl_chunked_equals_reference(processor, trainable, rollout_with_banned, last_chunk):
    rollout, banned_row = rollout_with_banned
    ref_path = VLPolicyPath(processor, trainable, "geometry", 1024, logit_chunk=0)
    batch = ref_path.collate(rollout, list(range(len(rollout))))
    assert batch.position_ids.dim() == 3 and "pixel_values" in batch.extra  # [3, B, P+R] mRoPE
    width_r = batch.response_ids.shape[1]
    divisors = [c for c in range(2, width_r) if width_r % c == 0]
    chunk = divisors[0] if last_chunk == "full" else width_r // 2 + 1
    assert width_r > chunk > 1 and (width_r % chunk == 0) == (last_chunk == "full")
    new_path = VLPolicyPath(processor, trainable, "geometry", 1024, logit_chunk=chunk)
    ref = _run(trainable, ref_path, batch, 0.8)
    new = _run(trainable, new_path, batch, 0.8)
    assert float(ref[0][banned_row, 1]) < -1e29 and float(new[0][banned_row, 1]) < -1e29
    real = batch.response_mask.bool()  # [B, R]
    finite = (ref[0].abs() < 1e20) & real
    _close(new[0][finite], ref[0][finite], "log-probs")
    _close(new[1][real], ref[1][real], "entropy")
    assert not new[0][~real].any()  # padding is skipped
    assert set(new[2]) == set(ref[2])
    assert "lm_head.weight" in ref[2] and any("visual" in n for n in ref[2])
    for name, grad in ref[2].items():
        _close(new[2][name], grad, f"grad {name}")
