"""The rollout engine interface: prompts in, sampled responses with their log-probs out.

Engines return ragged per-sample lists so that an engine's padding scheme never leaks into
the trainer: the policy path re-collates micro-batches with its own (minimal) padding.
Samples of one prompt are contiguous (rows ``[i*n, (i+1)*n)`` belong to prompt ``i``), which
is the layout the group advantages rely on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn


@dataclass
class PromptInput:
    """One prompt as token ids, plus whatever a multimodal engine needs (images, grids)."""

    input_ids: list[int]
    multimodal: dict[str, Any] | None = None


@dataclass(frozen=True)
class SamplingSettings:
    """How responses are sampled; ``stop_token_ids`` end a response (kept in it)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None


@dataclass
class Rollout:
    """Sampled responses, one entry per sample, groups contiguous.

    ``response_ids[i]`` ends with a stop token unless ``truncated[i]``;
    ``sampler_logp[i][t]`` is the sampler's log-prob of ``response_ids[i][t]`` under the
    distribution it sampled from (temperature / top-p applied).
    """

    prompt_index: list[int]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    sampler_logp: list[list[float]]
    truncated: list[bool]
    multimodal: list[dict[str, Any] | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.response_ids)


class RolloutEngine(Protocol):
    """What the loop needs from a generator (transformers ``generate`` or vLLM)."""

    def generate(self, prompts: list[PromptInput], sampling: SamplingSettings) -> Rollout:
        """``sampling.n`` responses per prompt, groups contiguous."""

    def sync_weights(self, model: nn.Module) -> None:
        """Make the engine sample from ``model``'s current weights."""

    def sleep(self) -> None:
        """Free generation memory while the trainer runs (no-op where unsupported)."""

    def wake(self) -> None:
        """Undo :meth:`sleep` before the next generation."""

    def metrics(self) -> dict[str, float]:
        """Engine counters for the step's record (e.g. weight-sync checks); may be empty."""
