"""The objective core against hand-computed values, the paper's gradient and its properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_gmpo.objective import LOSSES, compute_policy_loss

# Two responses: row 0 has three tokens and A = +1, row 1 two tokens (one pad) and A = -1.
# The pad position holds garbage (-inf / huge) that must never leak into the result.
DELTA = [[0.5, -0.6, 0.1], [0.5, -0.6, 0.0]]
MASK = [[1, 1, 1], [1, 1, 0]]
ADV = [1.0, -1.0]


def _batch(delta=DELTA, mask=MASK, adv=ADV, garbage_pad: bool = True):
    old = torch.full((len(delta), len(delta[0])), -2.0)  # [B, T]
    logp = (old + torch.tensor(delta)).clone()  # [B, T]
    mask_t = torch.tensor(mask, dtype=torch.float32)  # [B, T]
    if garbage_pad:
        logp = torch.where(mask_t.bool(), logp, torch.tensor(-float("inf")))
        old = torch.where(mask_t.bool(), old, torch.tensor(1e30))
    return logp.requires_grad_(True), old, torch.tensor(adv), mask_t


def _loss(name, **kw):
    logp, old, adv, mask = _batch(**{k: kw.pop(k) for k in ("delta", "mask", "adv") if k in kw})
    loss, metrics = compute_policy_loss(name, logp, old, adv, mask, **kw)
    return loss, metrics, logp


# ---------------------------------------------------------------- hand-computed values
def test_gmpo_hand_values_both_signs():
    # Row 0 (A>0): 0.5 is clipped to 0.4 (ratio rose too far), -0.6 stays (pessimistic side).
    w0 = math.exp((0.4 - 0.6 + 0.1) / 3)
    # Row 1 (A<0): 0.5 stays (pessimistic), -0.6 is clipped to -0.4 (ratio fell too far).
    w1 = math.exp((0.5 - 0.4) / 2)
    loss, metrics, _ = _loss("gmpo")
    assert loss.item() == pytest.approx((-w0 + w1) / 2, abs=1e-6)
    # 1 high-side clip (row 0) and 1 low-side clip (row 1) among 5 real tokens.
    assert metrics["clip_frac_high"].item() == pytest.approx(1 / 5)
    assert metrics["clip_frac_low"].item() == pytest.approx(1 / 5)
    assert metrics["log_ratio_min"].item() == pytest.approx(-0.6)
    assert metrics["log_ratio_max"].item() == pytest.approx(0.5)


def test_gmpo_asymmetric_range_uses_each_bound():
    # eps_low = 0.1, eps_high = 0.45: row 0's 0.5 clips to 0.45; row 1's -0.6 clips to -0.1.
    w0 = math.exp((0.45 - 0.6 + 0.1) / 3)
    w1 = math.exp((0.5 - 0.1) / 2)
    loss, _, _ = _loss("gmpo", clip_low=0.1, clip_high=0.45)
    assert loss.item() == pytest.approx((-w0 + w1) / 2, abs=1e-6)


def test_gmpo_symmetric_clip_equals_design_formula():
    """For eps_low == eps_high our clip(δ) equals the authors' clamp of s·δ (docs/DESIGN.md, "The clip")."""
    torch.manual_seed(0)
    delta = torch.randn(6, 7)  # [B, T]
    adv = torch.randn(6)  # [B]
    eps = 0.3
    s = torch.where(adv >= 0, 1.0, -1.0).unsqueeze(1)
    literal = s * torch.minimum(s * delta, (s * delta).clamp(-eps, eps))
    expected = -(adv * torch.exp(literal.mean(dim=1))).mean()
    logp = delta.clone().requires_grad_(True)
    loss, _ = compute_policy_loss(
        "gmpo", logp, torch.zeros(6, 7), adv, torch.ones(6, 7), clip_low=eps, clip_high=eps
    )
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_gmpo_zero_advantage_row_contributes_nothing():
    logp, old, _, mask = _batch()
    adv = torch.tensor([0.0, 0.0])
    loss, metrics = compute_policy_loss("gmpo", logp, old, adv, mask)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(logp.grad) == 0
    assert metrics["clip_frac_high"].item() == 0.0


def test_gmpo_nonorm_hand_value():
    # Row 0 clipped sum -0.1, row 1 clipped sum +0.1, no 1/|o| power.
    loss, _, _ = _loss("gmpo_nonorm")
    assert loss.item() == pytest.approx((-math.exp(-0.1) + math.exp(0.1)) / 2, abs=1e-6)


def test_gmpo_seqclip_clips_whole_sequence():
    # Sum 0.8 > 0.4 for A>0: the sequence is clipped at 0.4 and no token gets gradient.
    loss, metrics, logp = _loss("gmpo_seqclip", delta=[[0.5, 0.3]], mask=[[1, 1]], adv=[1.0])
    assert loss.item() == pytest.approx(-math.exp(0.4 / 2), abs=1e-6)
    loss.backward()
    assert torch.count_nonzero(logp.grad) == 0
    assert metrics["clip_frac_high"].item() == 1.0
    # Token-level GMPO on the same row keeps 0.3's gradient: 0.5 -> 0.4, mean 0.35.
    loss_tok, _, logp_tok = _loss("gmpo", delta=[[0.5, 0.3]], mask=[[1, 1]], adv=[1.0])
    assert loss_tok.item() == pytest.approx(-math.exp(0.35), abs=1e-6)
    loss_tok.backward()
    assert logp_tok.grad[0, 0] == 0 and logp_tok.grad[0, 1] != 0


def test_grpo_hand_values():
    e = math.exp
    row0 = -(1.2 + e(-0.6) + e(0.1)) / 3  # 0.5's ratio clipped at 1.2
    row1 = (e(0.5) + 0.8) / 2  # -0.6's ratio clipped at 0.8 for A<0
    loss, metrics, _ = _loss("grpo")
    assert loss.item() == pytest.approx((row0 + row1) / 2, abs=1e-6)
    assert metrics["clip_frac_high"].item() == pytest.approx(1 / 5)
    assert metrics["clip_frac_low"].item() == pytest.approx(1 / 5)


def test_dr_grpo_hand_values():
    e = math.exp
    row0 = -(1.2 + e(-0.6) + e(0.1)) / 4  # divided by the constant budget, not |o|
    row1 = (e(0.5) + 0.8) / 4
    loss, _, _ = _loss("dr_grpo", max_len=4)
    assert loss.item() == pytest.approx((row0 + row1) / 2, abs=1e-6)


def test_dapo_hand_values_token_mean_and_clip_higher():
    e = math.exp
    tokens = [-1.28, -e(-0.6), -e(0.1), e(0.5), 0.8]  # 0.5's ratio now clipped at 1.28
    loss, _, _ = _loss("dapo")
    assert loss.item() == pytest.approx(sum(tokens) / 5, abs=1e-6)


def test_gspo_hand_values():
    # Row 0: mean δ = 0 -> ratio 1. Row 1: mean δ = -0.05, inside (0.8, 1.2) -> unclipped.
    loss, _, _ = _loss("gspo", clip_low=0.2, clip_high=0.2)
    assert loss.item() == pytest.approx((-1.0 + math.exp(-0.05)) / 2, abs=1e-6)
    # With the paper's tiny range the second row's ratio is clipped at 1 - 3e-4.
    loss_default, metrics, _ = _loss("gspo")
    assert loss_default.item() == pytest.approx((-1.0 + (1 - 3e-4)) / 2, abs=1e-6)
    assert metrics["clip_frac_low"].item() == pytest.approx(2 / 5)


# ---------------------------------------------------------------- the paper's gradient (Eq. 6)
def test_gmpo_gradient_matches_closed_form():
    """dL/dlogp_it = -(1/B) · A_i · w_i · m_t / |o_i| · 1[token t not clipped]."""
    torch.manual_seed(1)
    B, T = 8, 12
    old = torch.randn(B, T)  # [B, T]
    logp = (old + 0.5 * torch.randn(B, T)).requires_grad_(True)  # [B, T]
    mask = (torch.rand(B, T) > 0.2).float()  # [B, T]
    mask[:, 0] = 1
    adv = torch.randn(B)  # [B]
    eps = 0.3
    loss, _ = compute_policy_loss("gmpo", logp, old, adv, mask, clip_low=eps, clip_high=eps)
    loss.backward()

    delta = (logp - old).detach()
    s = torch.where(adv >= 0, 1.0, -1.0).unsqueeze(1)
    clipped_tok = (s * delta) > eps  # pushed past the bound in the advantage's direction
    delta_tilde = torch.where(clipped_tok, s * eps, delta)
    lengths = mask.sum(1)
    w = torch.exp((delta_tilde * mask).sum(1) / lengths)  # [B]
    expected = -(adv * w / lengths).unsqueeze(1) * mask * (~clipped_tok) / B
    assert clipped_tok[mask.bool()].any(), "the case must include clipped tokens"
    torch.testing.assert_close(logp.grad, expected, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- invariances and properties
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_padding_invariance(name):
    torch.manual_seed(2)
    B, T, extra = 4, 6, 5
    old = torch.randn(B, T)
    base = (old + 0.3 * torch.randn(B, T)).detach()
    mask = torch.ones(B, T)
    mask[1, 4:] = 0
    adv = torch.randn(B)
    kw = {"max_len": 16} if name == "dr_grpo" else {}

    logp_a = base.clone().requires_grad_(True)
    loss_a, _ = compute_policy_loss(name, logp_a, old, adv, mask, **kw)
    loss_a.backward()

    pad_logp = torch.full((B, extra), -float("inf"))
    logp_b = torch.cat([base, pad_logp], dim=1).requires_grad_(True)
    old_b = torch.cat([old, torch.randn(B, extra) * 100], dim=1)
    mask_b = torch.cat([mask, torch.zeros(B, extra)], dim=1)
    loss_b, _ = compute_policy_loss(name, logp_b, old_b, adv, mask_b, **kw)
    loss_b.backward()

    assert torch.isfinite(loss_b)
    assert loss_b.item() == pytest.approx(loss_a.item(), abs=1e-6)
    torch.testing.assert_close(logp_b.grad[:, :T], logp_a.grad)
    assert torch.count_nonzero(logp_b.grad[:, T:]) == 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_micro_batches_sum_to_full_batch(name):
    """With the global denominator, gradient accumulation reproduces the full-batch step."""
    torch.manual_seed(3)
    B, T = 6, 5
    old = torch.randn(B, T)
    base = old + 0.2 * torch.randn(B, T)
    mask = (torch.rand(B, T) > 0.3).float()
    mask[:, 0] = 1
    adv = torch.randn(B)
    unit_count = mask.sum().item() if LOSSES[name].unit == "token" else B

    full = base.clone().requires_grad_(True)
    loss_full, _ = compute_policy_loss(name, full, old, adv, mask, max_len=T)
    loss_full.backward()

    parts = base.clone().requires_grad_(True)
    total = 0.0
    for sl in (slice(0, 2), slice(2, 6)):
        part_loss, _ = compute_policy_loss(
            name, parts[sl], old[sl], adv[sl], mask[sl], max_len=T, denominator=unit_count
        )
        part_loss.backward()
        total += part_loss.item()
    assert total == pytest.approx(loss_full.item(), abs=1e-6)
    torch.testing.assert_close(parts.grad, full.grad)


_floats = st.floats(min_value=-2.0, max_value=2.0, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    deltas=st.lists(_floats, min_size=1, max_size=12),
    adv=st.floats(min_value=-3, max_value=3, allow_nan=False, width=32),
)
def test_am_gm_gmpo_objective_bounded_by_grpo(deltas, adv):
    """Unclipped, |A·(Π r)^(1/n)| ≤ |A·mean(r)| for every sequence (AM-GM)."""
    logp = torch.tensor([deltas])
    zeros = torch.zeros_like(logp)
    mask = torch.ones_like(logp)
    a = torch.tensor([adv])
    j_gmpo, _ = compute_policy_loss("gmpo_noclip", logp, zeros, a, mask)
    j_grpo, _ = compute_policy_loss("grpo", logp, zeros, a, mask, clip_low=1.0, clip_high=1e9)
    assert abs(j_gmpo.item()) <= abs(j_grpo.item()) * (1 + 1e-5) + 1e-6


@settings(max_examples=40, deadline=None)
@given(
    deltas=st.lists(st.lists(_floats, min_size=4, max_size=4), min_size=1, max_size=5),
    seed=st.integers(0, 99),
)
def test_gmpo_noclip_equals_unclipped_gspo(deltas, seed):
    g = torch.Generator().manual_seed(seed)
    logp = torch.tensor(deltas)
    adv = torch.randn(logp.shape[0], generator=g)
    mask = (torch.rand(logp.shape, generator=g) > 0.3).float()
    mask[:, 0] = 1
    zeros = torch.zeros_like(logp)
    a, _ = compute_policy_loss("gmpo_noclip", logp, zeros, adv, mask)
    b, _ = compute_policy_loss("gspo", logp, zeros, adv, mask, clip_low=1.0, clip_high=1e9)
    assert a.item() == pytest.approx(b.item(), rel=1e-5, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    advs=st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=1, max_size=6),
    seed=st.integers(0, 99),
)
def test_zero_delta_reduces_to_minus_mean_advantage(advs, seed):
    g = torch.Generator().manual_seed(seed)
    adv = torch.tensor(advs)
    B, T = len(advs), 5
    logp = torch.randn(B, T, generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.4).float()
    mask[:, 0] = 1
    lengths = mask.sum(1)
    expected = {
        "dr_grpo": -(adv * lengths / 8).mean(),  # scaled by |o| / max_len
        "dapo": -(adv * lengths).sum() / lengths.sum(),  # token-weighted mean
    }
    for name in LOSSES:
        loss, _ = compute_policy_loss(name, logp, logp.clone(), adv, mask, max_len=8)
        want = expected.get(name, -adv.mean())
        assert loss.item() == pytest.approx(want.item(), abs=1e-5), name


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_finite_for_extreme_ratios_and_single_token(name, sign):
    logp = torch.tensor([[sign * 50.0, -sign * 50.0, sign * 50.0], [sign * 50.0, 0.0, 0.0]])
    logp.requires_grad_(True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # row 1: a one-token response
    for adv in (torch.tensor([1.0, -1.0]), torch.tensor([-2.0, 2.0])):
        loss, metrics = compute_policy_loss(name, logp, torch.zeros(2, 3), adv, mask, max_len=3)
        (grad,) = torch.autograd.grad(loss, logp)
        assert torch.isfinite(loss), name
        assert torch.isfinite(grad).all(), name
        assert all(torch.isfinite(v) for v in metrics.values()), name


def test_kl_term_zero_at_reference_and_positive_away():
    logp, old, adv, mask = _batch()
    ref_same = torch.where(mask.bool(), logp.detach(), torch.tensor(0.0))
    base, _ = compute_policy_loss("gmpo", logp, old, adv, mask)
    same, m_same = compute_policy_loss("gmpo", logp, old, adv, mask, ref_logp=ref_same, kl_coef=0.1)
    assert same.item() == pytest.approx(base.item(), abs=1e-7)
    away, m_away = compute_policy_loss("gmpo", logp, old, adv, mask, ref_logp=ref_same - 0.5, kl_coef=0.1)
    assert m_away["ref_kl"].item() > 0
    assert away.item() == pytest.approx(base.item() + 0.1 * m_away["ref_kl"].item(), abs=1e-6)


def test_shape_and_name_errors_are_clear():
    logp, old, adv, mask = _batch()
    with pytest.raises(KeyError, match="registered losses: .*gmpo"):
        compute_policy_loss("gmpoo", logp, old, adv, mask)
    with pytest.raises(ValueError, match="advantages must be"):
        compute_policy_loss("gmpo", logp, old, adv[:1], mask)
    with pytest.raises(ValueError, match="same"):
        compute_policy_loss("gmpo", logp, old[:, :2], adv, mask)
