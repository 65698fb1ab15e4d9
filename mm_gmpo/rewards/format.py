"""Format reward of the VL recipe and the combined reward of EasyR1's Geometry3K recipe.

The recipe asks for reasoning inside ``<think> </think>`` followed by the final answer in
``\\boxed{}``. The check is written as plain string scanning instead of a regex with several
``.*``: those backtrack quadratically on long responses.
"""

from __future__ import annotations

from dataclasses import dataclass

from mm_gmpo.rewards.extract import last_boxed

_OPEN, _CLOSE = "<think>", "</think>"


def format_reward(response: str) -> float:
    """1.0 when the response is ``<think>reasoning</think> ... \\boxed{answer} ...``, else 0.0.

    Why: rewards the structure the VL prompt asks for, so that answers can be read off
    reliably. Exactly one think block, opening the response, closed, and a complete box
    after it.
    """
    if not isinstance(response, str):
        return 0.0
    s = response.strip()
    if not s.startswith(_OPEN) or s.count(_OPEN) != 1 or s.count(_CLOSE) != 1:
        return 0.0
    close = s.find(_CLOSE)
    if close < len(_OPEN):
        return 0.0
    return 1.0 if last_boxed(s[close + len(_CLOSE) :]) is not None else 0.0


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the combined reward: ``accuracy * acc + format * fmt``.

    Defaults are EasyR1's Geometry3K recipe (0.9 / 0.1); the text path uses (1.0, 0.0).
    """

    accuracy: float = 0.9
    format: float = 0.1


def combined_reward(accuracy: float, fmt: float, weights: RewardWeights | None = None) -> float:
    """``weights.accuracy * accuracy + weights.format * fmt``.

    Why: one place for the weighted sum so that the scorer and eval agree on it.
    """
    w = weights or RewardWeights()
    return w.accuracy * accuracy + w.format * fmt
