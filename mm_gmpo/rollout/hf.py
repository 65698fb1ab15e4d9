"""Rollouts with transformers ``generate`` on the training model itself (colocated, no copy).

Sharing the trainer's module means there are no weights to sync; the price is that
generation runs at training precision and without paged attention, which is what the vLLM
engine is for.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from mm_gmpo.rollout.base import PromptInput, Rollout, SamplingSettings

# Turns prompts into left-padded generate() inputs: input_ids, attention_mask (+ images).
PromptCollator = Callable[[list[PromptInput], int], dict[str, torch.Tensor]]


def left_pad_prompts(prompts: list[PromptInput], pad_id: int) -> dict[str, torch.Tensor]:
    """Left padding, so every prompt ends at the same column and responses start together."""
    width = max(len(p.input_ids) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # [B, P]
    attn = torch.zeros((len(prompts), width), dtype=torch.long)  # [B, P]
    for row, prompt in enumerate(prompts):
        n = len(prompt.input_ids)
        ids[row, width - n :] = torch.tensor(prompt.input_ids, dtype=torch.long)
        attn[row, width - n :] = 1
    return {"input_ids": ids, "attention_mask": attn}


def split_responses(
    generated: torch.Tensor, step_logp: torch.Tensor, stop_ids: set[int]
) -> tuple[list[list[int]], list[list[float]], list[bool]]:
    """Cut each generated row after its first stop token; no stop token means truncated.

    ``generated`` [N, R] new tokens, ``step_logp`` [N, R] the sampler's log-prob of each.
    """
    responses, logps, truncated = [], [], []
    for row_ids, row_logp in zip(generated.tolist(), step_logp.tolist()):
        end = next((i for i, tok in enumerate(row_ids) if tok in stop_ids), None)
        keep = len(row_ids) if end is None else end + 1
        responses.append(row_ids[:keep])
        logps.append(row_logp[:keep])
        truncated.append(end is None)
    return responses, logps, truncated


class HFGenerateEngine:
    """Batched sampling with ``model.generate``; returns the sampler's per-token log-probs."""

    def __init__(
        self,
        model: nn.Module,
        pad_token_id: int,
        *,
        batch_size: int = 64,
        collate: PromptCollator | None = None,
        weights_context: Callable[[], AbstractContextManager] | None = None,
    ) -> None:
        self.model = model
        self.pad_token_id = pad_token_id
        self.batch_size = batch_size
        self.collate = collate or (lambda prompts, pad: left_pad_prompts(prompts, pad))
        # Entered around generation: ZeRO-3 gathers its sharded weights there.
        self.weights_context = weights_context or nullcontext

    def sync_weights(self, model: nn.Module) -> None:
        self.model = model  # same module object as the trainer's: nothing to copy

    def sleep(self) -> None:
        return None

    def wake(self) -> None:
        return None

    def metrics(self) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def generate(self, prompts: list[PromptInput], sampling: SamplingSettings) -> Rollout:
        if not sampling.stop_token_ids:
            raise ValueError("sampling.stop_token_ids is empty: responses could never end")
        out = Rollout([], [], [], [], [], [])
        was_training = self.model.training
        self.model.eval()
        try:
            with self.weights_context():
                for start in range(0, len(prompts), self.batch_size):
                    chunk = prompts[start : start + self.batch_size]
                    self._generate_chunk(chunk, start, sampling, out)
        finally:
            self.model.train(was_training)
        return out

    def _generate_chunk(
        self, chunk: list[PromptInput], offset: int, sampling: SamplingSettings, out: Rollout
    ) -> None:
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in self.collate(chunk, self.pad_token_id).items()}
        greedy = sampling.temperature <= 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "do_sample": not greedy,
            "num_return_sequences": sampling.n,  # copies of a prompt come out contiguous
            "eos_token_id": list(sampling.stop_token_ids),
            "pad_token_id": self.pad_token_id,
            "output_scores": True,
            "return_dict_in_generate": True,
            "use_cache": True,
        }
        if not greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        result = self.model.generate(**inputs, **kwargs)
        prompt_width = inputs["input_ids"].shape[1]
        new_tokens = result.sequences[:, prompt_width:]  # [N, R]
        # scores[t] [N, V]: the processed logits (temperature / top-p applied) the sampler drew
        # from. One step at a time: stacking them would hold N*R*V floats at once.
        step_logp = torch.stack(
            [
                torch.log_softmax(step.float(), dim=-1).gather(-1, new_tokens[:, t : t + 1]).squeeze(-1)
                for t, step in enumerate(result.scores)
            ],
            dim=1,
        )  # [N, R]
        responses, logps, truncated = split_responses(new_tokens, step_logp, set(sampling.stop_token_ids))
        for i, prompt in enumerate(chunk):
            for j in range(sampling.n):
                row = i * sampling.n + j
                out.prompt_index.append(offset + i)
                out.prompt_ids.append(list(prompt.input_ids))
                out.response_ids.append(responses[row])
                out.sampler_logp.append(logps[row])
                out.truncated.append(truncated[row])
                out.multimodal.append(prompt.multimodal)
