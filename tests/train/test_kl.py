"""The KL-to-reference term: its gradient in closed form, and a real reference in a run."""

from __future__ import annotations

import torch

from mm_gmpo.objective import compute_policy_loss
from mm_gmpo.train.build import build_run
from mm_gmpo.train.config import load_config


def test_kl_gradient_matches_the_closed_form() -> None:
    """k3 = exp(r) − 1 − r with r = ref − logp, so d k3 / d logp = 1 − exp(ref − logp).

    With zero advantages only the KL term acts: the gradient of a sequence-unit loss on token t of
    row i is kl_coef · (1 − exp(ref − logp)) · m_t / (|o_i| · B).
    """
    logp = torch.tensor([[-1.0, -0.5, -2.0], [-0.3, -1.2, 0.0]], requires_grad=True)  # [B, T]
    ref = torch.tensor([[-1.2, -0.5, -1.0], [-0.1, -2.0, -5.0]])  # [B, T]
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # [B, T]
    coef = 0.3
    loss, metrics = compute_policy_loss(
        "gmpo", logp, logp.detach(), torch.zeros(2), mask, ref_logp=ref, kl_coef=coef
    )
    loss.backward()
    lengths = mask.sum(dim=1, keepdim=True)  # [B, 1]
    expected = coef * (1 - torch.exp(ref - logp.detach())) * mask / (lengths * 2)  # [B, T]
    torch.testing.assert_close(logp.grad, expected)
    k3 = torch.exp(ref - logp.detach()) - 1 - (ref - logp.detach())  # [B, T]
    torch.testing.assert_close(metrics["ref_kl"], ((k3 * mask).sum(1) / lengths[:, 0]).mean())


def digit_reward(texts, records, truncated):
    """Spread inside every group, so the policy gradient moves the weights."""
    rewards = [sum(c.isdigit() for c in t) / max(1, len(t)) for t in texts]
    return rewards, [0.0] * len(texts), {}


def test_reference_policy_kl_is_zero_at_the_start_and_grows_after_updates(tmp_path) -> None:
    cfg = load_config(
        None,
        [
            "model.path=tiny:qwen2",
            "model.dtype=fp32",
            "data.train=synthetic:largest",
            "data.template=none",
            "data.max_prompt_len=64",
            "data.synthetic_train_size=16",
            f"train.output_dir={tmp_path / 'run'}",
            "train.prompts_per_step=4",
            "rollout.n=4",
            "rollout.max_new_tokens=6",
            "optim.lr=5e-2",
            "loss.kl_coef=0.1",
            "reward.num_workers=1",
        ],
    )
    run = build_run(cfg)
    try:
        reference = run.trainer.reference
        assert reference is not None and not any(p.requires_grad for p in reference.parameters())
        frozen = {n: p.detach().clone() for n, p in reference.named_parameters()}
        run.trainer.score = digit_reward
        torch.manual_seed(0)
        first = run.trainer.rl_step()
        later = [run.trainer.rl_step() for _ in range(2)]
        assert abs(first["ref_kl"]) < 1e-6  # the policy starts as the reference
        assert later[-1]["ref_kl"] > 1e-4
        assert all(torch.equal(p, frozen[n]) for n, p in reference.named_parameters())
    finally:
        run.close()
