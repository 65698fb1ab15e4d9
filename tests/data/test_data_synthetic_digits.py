"""The digit tasks ("largest", "sorted"): correct answers the verifier accepts, disjoint splits."""

from __future__ import annotations

import re

import pytest

from mm_gmpo.data.synthetic import (
    largest_problems,
    make_largest_records,
    make_sorted_records,
    sorted_problems,
)
from mm_gmpo.rewards.math_verifier import math_accuracy

SORT = re.compile(r"^Sort (\d), (\d), (\d), (\d) from smallest to largest\.$")


def test_sorted_answers_are_the_digits_in_order() -> None:
    records = make_sorted_records(300, seed=1)
    assert len({r.problem for r in records}) == 300
    for r in records:
        digits = [int(d) for d in SORT.match(r.problem).groups()]
        assert r.answer == "".join(map(str, sorted(digits)))
        assert "0" not in r.answer and len(set(digits)) == 4
        assert r.metadata["digits"] == digits


@pytest.mark.parametrize("problems", [sorted_problems, largest_problems])
def test_splits_are_disjoint_and_about_one_in_ten(problems) -> None:
    train, test = set(problems("train")), set(problems("test"))
    assert not train & test
    assert 0.05 < len(test) / (len(train) + len(test)) < 0.15
    with pytest.raises(ValueError, match="split"):
        problems("validation")


def test_deterministic_and_seeded() -> None:
    assert make_sorted_records(20, seed=3) == make_sorted_records(20, seed=3)
    assert make_sorted_records(20, seed=3) != make_sorted_records(20, seed=4)
    with pytest.raises(ValueError, match="distinct problems"):
        make_sorted_records(10**5, split="test")


def test_verifier_rewards_only_the_right_order() -> None:
    (rec,) = make_sorted_records(1, seed=0)
    right = rec.answer
    wrong = right[1] + right[0] + right[2:]
    assert math_accuracy(f"\\boxed{{{right}}}", rec.answer) == 1.0
    assert math_accuracy(f"\\boxed{{{wrong}}}", rec.answer) == 0.0
    assert math_accuracy(f"\\boxed{{{right[:3]}}}", rec.answer) == 0.0
    (big,) = make_largest_records(1, seed=0)
    assert math_accuracy(f"\\boxed{{{big.answer}}}", big.answer) == 1.0
