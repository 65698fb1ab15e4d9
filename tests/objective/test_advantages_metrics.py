"""Group advantages, zero-variance detection and the diagnostic metrics."""

from __future__ import annotations

import math

import pytest
import torch

from mm_gmpo.objective import entropy_from_logits, group_advantages, ratio_metrics, zero_variance_groups


def test_group_normalised_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])  # two groups of 3
    adv = group_advantages(rewards, 3, eps=0.0)
    std_a = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # unbiased std of [1, 0, 0]
    expected = [2 / 3 / std_a, -1 / 3 / std_a, -1 / 3 / std_a, -2 / 3 / std_a, 1 / 3 / std_a, 1 / 3 / std_a]
    assert adv.tolist() == pytest.approx(expected, abs=1e-6)


def test_mean_only_advantages_for_dr_grpo():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5])
    adv = group_advantages(rewards, 2, normalize_std=False)
    assert adv.tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0])


def test_groups_are_contiguous_not_strided():
    # Interleaving would pair rows 0 and 2; contiguous groups pair rows 0 and 1.
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert group_advantages(rewards, 2).abs().max().item() == 0.0


def test_constant_group_and_singleton_group_give_zero():
    assert group_advantages(torch.tensor([0.7, 0.7, 0.7]), 3).abs().max().item() == 0.0
    assert group_advantages(torch.tensor([1.0, 0.0]), 1).abs().max().item() == 0.0


def test_bad_group_size_is_a_clear_error():
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        group_advantages(torch.ones(6), 4)


def test_zero_variance_groups():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    assert zero_variance_groups(rewards, 2).tolist() == [True, False, True]


def test_ratio_metrics_ignore_padding_garbage():
    logp = torch.tensor([[0.1, -0.3, 99.0]])
    old = torch.tensor([[0.0, 0.0, -99.0]])
    mask = torch.tensor([[1, 1, 0]])
    none = torch.zeros(1, 3, dtype=torch.bool)
    m = ratio_metrics(logp, old, mask, none, none)
    assert m["log_ratio_max"].item() == pytest.approx(0.1)
    assert m["log_ratio_min"].item() == pytest.approx(-0.3)
    assert m["log_ratio_mean"].item() == pytest.approx(-0.1)
    assert m["ratio_mean"].item() == pytest.approx((math.exp(0.1) + math.exp(-0.3)) / 2)
    # k3 of KL(old || new) on samples from old: r = new - old.
    k3 = [math.exp(d) - 1 - d for d in (0.1, -0.3)]
    assert m["approx_kl"].item() == pytest.approx(sum(k3) / 2, abs=1e-6)


def test_entropy_from_logits():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    ent = entropy_from_logits(logits)
    assert ent[0].item() == pytest.approx(math.log(4))
    assert ent[1].item() == pytest.approx(0.0, abs=1e-6)
