"""The probe's per-token records: categories, choice counts and gradient weights are right."""

from __future__ import annotations

import math

import pytest
import torch

from mm_gmpo.analysis.probe import TokenLog, _record, recording, summarize_tokens


def _batch():
    # Row 0: A > 0, one token far below π_old (δ = -3, not clipped on the A > 0 side).
    # Row 1: A < 0, one token far above (δ = +3: unclipped for A < 0 in both losses).
    # Row 2: A = 0, one token far below (moved only through shared weights).
    old = torch.log(torch.tensor([[0.5, 0.99, 0.99], [0.2, 0.99, 0.99], [0.05, 0.99, 0.99]]))  # [3, 3]
    delta = torch.tensor([[-3.0, 0.0, 0.0], [3.0, 0.0, 0.0], [-4.0, 0.0, 0.0]])  # [3, 3]
    mask = torch.ones(3, 3)  # [3, 3]
    adv = torch.tensor([1.0, -1.0, 0.0])  # [3]
    return old + delta, old, adv, mask


@pytest.mark.parametrize("loss", ["gmpo", "grpo"])
def test_records_categories_and_choice_tokens(loss):
    log = TokenLog()
    logp, old, adv, mask = _batch()
    _record(log, loss, logp, old, adv, mask, {})
    s = summarize_tokens(log)
    assert s["tokens"] == 9 and s["response_tokens_mean"] == 3
    assert s["choice_tokens_mean"] == 1  # only the first token of each row has π_old < 0.9
    assert s["extreme_frac"] == pytest.approx(3 / 9)
    assert s["extreme_zero_adv"] == pytest.approx(1 / 3)
    assert s["extreme_pushed"] == pytest.approx(2 / 3) and s["extreme_clipped"] == 0
    assert s["delta_min"] == -4 and s["delta_min_live"] == -3


def test_gradient_weights_are_grpo_token_ratio_and_gmpo_geometric_mean():
    logp, old, adv, mask = _batch()
    weights = {}
    for loss in ("gmpo", "grpo"):
        log = TokenLog()
        _record(log, loss, logp, old, adv, mask, {})
        kind, w = log.cat("kind"), log.cat("weight")
        weights[loss] = w[kind == 1]
    # Row 1's first token: GRPO weighs it by its own ratio e^3; GMPO by exp(mean δ) = e^(3/3).
    assert float(weights["grpo"].max()) == pytest.approx(math.exp(3.0), rel=1e-5)
    assert float(weights["gmpo"].max()) == pytest.approx(math.e, rel=1e-5)
    assert float(weights["gmpo"].min()) == pytest.approx(math.exp(-1.0), rel=1e-5)


def test_recording_wraps_and_restores_the_trainers_loss():
    import mm_gmpo.train.loop as loop

    original = loop.compute_policy_loss
    log = TokenLog()
    logp, old, adv, mask = _batch()
    with recording(log):
        assert loop.compute_policy_loss is not original
        loss, metrics = loop.compute_policy_loss("gmpo", logp, old, adv, mask, clip_low=0.4, clip_high=0.4)
    assert loop.compute_policy_loss is original
    assert torch.isfinite(loss) and "log_ratio_min" in metrics
    assert log.cat("delta").numel() == 9
