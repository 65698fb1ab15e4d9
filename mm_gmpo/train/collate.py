"""Prompt + response collation shared by the text and VL paths.

Layout: prompts left-padded to width P, responses right-padded to width R, so every
response starts at column P. That lets the forward keep only the last R+1 logits (a [B, R, V]
tensor instead of [B, P+R, V]) and gives per-token tensors of one shape, [B, R], for the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TrainBatch:
    """A micro-batch ready for the policy forward."""

    input_ids: torch.Tensor  # [B, P+R]
    attention_mask: torch.Tensor  # [B, P+R]
    position_ids: torch.Tensor  # [B, P+R] (the VL path replaces it with 3-D mRoPE positions)
    response_ids: torch.Tensor  # [B, R]
    response_mask: torch.Tensor  # [B, R] float
    prompt_width: int
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. pixel_values, grids

    def to(self, device: torch.device | str) -> TrainBatch:
        return TrainBatch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            position_ids=self.position_ids.to(device),
            response_ids=self.response_ids.to(device),
            response_mask=self.response_mask.to(device),
            prompt_width=self.prompt_width,
            extra={k: v.to(device) for k, v in self.extra.items()},
        )


def collate_prompt_response(
    prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int
) -> TrainBatch:
    """Left-pad prompts, right-pad responses; positions count real tokens only (as generate does)."""
    if len(prompt_ids) != len(response_ids) or not prompt_ids:
        raise ValueError(f"need as many prompts as responses (got {len(prompt_ids)} and {len(response_ids)})")
    batch = len(prompt_ids)
    width_p = max(len(p) for p in prompt_ids)
    width_r = max(1, max(len(r) for r in response_ids))
    ids = torch.full((batch, width_p + width_r), pad_id, dtype=torch.long)  # [B, P+R]
    attn = torch.zeros((batch, width_p + width_r), dtype=torch.long)  # [B, P+R]
    for row, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
        ids[row, width_p - len(prompt) : width_p] = torch.tensor(prompt, dtype=torch.long)
        attn[row, width_p - len(prompt) : width_p] = 1
        ids[row, width_p : width_p + len(response)] = torch.tensor(response, dtype=torch.long)
        attn[row, width_p : width_p + len(response)] = 1
    positions = (attn.cumsum(dim=1) - 1).clamp(min=0)  # [B, P+R]
    resp_mask = attn[:, width_p:].float()  # [B, R]
    return TrainBatch(ids, attn, positions, ids[:, width_p:].clone(), resp_mask, width_p)


def pad_ragged(rows: list[list[float]], width: int, fill: float = 0.0) -> torch.Tensor:
    """Right-pad per-sample float lists (e.g. the sampler's log-probs) to [B, width]."""
    out = torch.full((len(rows), width), fill, dtype=torch.float32)  # [B, width]
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row[:width], dtype=torch.float32)
    return out


def response_logp_and_entropy(
    response_logits: torch.Tensor, response_ids: torch.Tensor, temperature: float, with_entropy: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs of the sampled tokens under logits / temperature (as sampled).

    ``response_logits`` [B, R, V] are the logits that predict ``response_ids`` [B, R].
    """
    scaled = response_logits.float()
    if temperature > 0 and temperature != 1.0:
        scaled = scaled / temperature
    logp_all = torch.log_softmax(scaled, dim=-1)  # [B, R, V]
    logp = logp_all.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)  # [B, R]
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logp_all.exp() * logp_all).sum(-1)  # [B, R]
    return logp, entropy
