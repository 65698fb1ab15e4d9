"""Truncated importance weights: hand values, the cap, the geometric mean, the folded objective."""

from __future__ import annotations

import math

import pytest
import torch

from mm_gmpo.objective import compute_policy_loss
from mm_gmpo.objective.tis import tis_log_token_weights, tis_sequence_weights

# Row 0: three tokens; row 1: two tokens and a pad whose values must never leak in.
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -3.0, float("-inf")]])
SAMPLER = torch.tensor([[-1.5, -1.0, -0.5], [-1.0, -1.0, 0.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def tis_token_weights(old, sampler, mask, cap):
    return torch.exp(tis_log_token_weights(old, sampler, mask, cap))  # [B, T]


def test_token_weights_are_capped_ratios_and_one_on_padding():
    w = tis_token_weights(OLD, SAMPLER, MASK, cap=1.2)
    expected = torch.tensor([[min(math.exp(0.5), 1.2), math.exp(-1.0), 1.0], [1.0, math.exp(-2.0), 1.0]])
    torch.testing.assert_close(w, expected)


def test_sequence_weight_is_the_geometric_mean_of_the_token_weights():
    cap = 1.2
    w_tok = tis_token_weights(OLD, SAMPLER, MASK, cap)
    seq = tis_sequence_weights(OLD, SAMPLER, MASK, cap)
    row0 = (w_tok[0, 0] * w_tok[0, 1] * w_tok[0, 2]) ** (1 / 3)
    row1 = (w_tok[1, 0] * w_tok[1, 1]) ** (1 / 2)
    torch.testing.assert_close(seq, torch.stack([row0, row1]))


def test_matching_sampler_gives_weight_one_and_weights_carry_no_gradient():
    old = OLD.clone().requires_grad_(True)
    seq = tis_sequence_weights(old, torch.where(MASK.bool(), OLD, 0.0), MASK, cap=2.0)
    torch.testing.assert_close(seq, torch.ones(2))
    assert not seq.requires_grad


def test_long_responses_do_not_underflow():
    old = torch.full((1, 5000), -1.0)
    sampler = torch.zeros((1, 5000))
    seq = tis_sequence_weights(old, sampler, torch.ones(1, 5000), cap=2.0)
    torch.testing.assert_close(seq, torch.tensor([math.exp(-1.0)]))


def test_folded_into_gmpo_scales_each_sequence_term():
    """GMPO with TIS = mean_i(-A_i · W_i · w_i): the weight rescales the advantage only."""
    logp = torch.tensor([[-0.9, -2.1, -0.4], [-1.1, -2.9, 0.0]], requires_grad=True)
    adv = torch.tensor([1.0, -0.5])
    seq_w = tis_sequence_weights(OLD, SAMPLER, MASK, cap=1.5)
    old = torch.where(MASK.bool(), OLD, 0.0)
    loss_tis, _ = compute_policy_loss("gmpo", logp, old, adv * seq_w, MASK)
    per_row = [
        compute_policy_loss("gmpo", logp[i : i + 1], old[i : i + 1], adv[i : i + 1], MASK[i : i + 1])[0]
        for i in range(2)
    ]
    expected = (seq_w[0] * per_row[0] + seq_w[1] * per_row[1]) / 2
    torch.testing.assert_close(loss_tis, expected)


def test_bad_input():
    with pytest.raises(ValueError, match="cap"):
        tis_sequence_weights(OLD, SAMPLER, MASK, cap=0.0)
    with pytest.raises(ValueError, match="shape"):
        tis_sequence_weights(OLD, SAMPLER[:, :2], MASK, cap=1.0)
