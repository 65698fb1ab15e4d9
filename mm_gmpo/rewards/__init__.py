"""Rewards: answer extraction, math and geometry verifiers, format reward, batch scorer.

The training loop uses ``RewardScorer``; the verifier functions are plain and importable
for eval scripts and tests.
"""

from mm_gmpo.rewards.extract import (
    after_think,
    choice_letter,
    extract_choice,
    final_answer,
    last_boxed,
    letter_of,
    names_several_options,
    stated_option,
)
from mm_gmpo.rewards.format import RewardWeights, combined_reward, format_reward
from mm_gmpo.rewards.geometry import geometry_accuracy, geometry_equal, numbers_match
from mm_gmpo.rewards.math_verifier import answer_matches, ground_truths, math_accuracy, math_equal
from mm_gmpo.rewards.scorer import HardLimitPool, RewardScorer, ScoreResult

__all__ = [
    "HardLimitPool",
    "RewardScorer",
    "RewardWeights",
    "ScoreResult",
    "after_think",
    "answer_matches",
    "choice_letter",
    "combined_reward",
    "extract_choice",
    "final_answer",
    "format_reward",
    "geometry_accuracy",
    "geometry_equal",
    "ground_truths",
    "last_boxed",
    "letter_of",
    "math_accuracy",
    "math_equal",
    "names_several_options",
    "numbers_match",
    "stated_option",
]
