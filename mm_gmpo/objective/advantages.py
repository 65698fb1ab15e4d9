"""Group-relative advantages.

Rows are laid out in contiguous groups: rows ``[g*G, (g+1)*G)`` are the G samples of prompt g.
The rollout and the loop keep that layout, so no group ids need to travel with the batch.
"""

from __future__ import annotations

import torch


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [num_samples], got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"{rewards.numel()} rewards do not split into groups of {group_size}; "
            "groups must be contiguous and complete"
        )
    return rewards.view(-1, group_size)  # [num_groups, G]


def group_advantages(
    rewards: torch.Tensor, group_size: int, *, normalize_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """GRPO/GMPO advantages: (r - mean_g) / (std_g + eps); Dr.GRPO with ``normalize_std=False``.

    The std is the unbiased sample std over the G samples of a group, as in GRPO
    implementations (DeepSeekMath, TRL, verl). A group with G = 1 has no baseline to compare
    against, so its advantage is 0.
    """
    grouped = _grouped(rewards.float(), group_size)  # [num_groups, G]
    centered = grouped - grouped.mean(dim=1, keepdim=True)  # [num_groups, G]
    if normalize_std:
        if group_size > 1:
            std = grouped.std(dim=1, keepdim=True)  # [num_groups, 1]
        else:
            std = torch.zeros_like(grouped[:, :1])
        centered = centered / (std + eps)
    return centered.reshape(-1)  # [num_samples]


def zero_variance_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """True for each group whose rewards are all equal (no learning signal; DAPO drops them)."""
    grouped = _grouped(rewards, group_size)  # [num_groups, G]
    return (grouped == grouped[:, :1]).all(dim=1)  # [num_groups]
