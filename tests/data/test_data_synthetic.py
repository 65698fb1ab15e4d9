"""The synthetic arithmetic task is deterministic, correct, and its splits are disjoint."""

from __future__ import annotations

import re

import pytest

from mm_gmpo.data import make_arithmetic_records
from mm_gmpo.data.synthetic import arithmetic_problems

PATTERN = re.compile(r"^What is (\d{2}) ([+-]) (\d{2})\?$")


def test_deterministic_for_seed_and_split() -> None:
    a = make_arithmetic_records(64, seed=3, split="train")
    assert a == make_arithmetic_records(64, seed=3, split="train")
    assert a != make_arithmetic_records(64, seed=4, split="train")
    assert len({r.problem for r in a}) == 64  # distinct problems
    assert len({r.id for r in a}) == 64


def test_answers_are_correct_and_nonnegative() -> None:
    for r in make_arithmetic_records(200, seed=0):
        m = PATTERN.match(r.problem)
        assert m, r.problem
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        expected = a + b if op == "+" else a - b
        assert r.answer == str(expected) and expected >= 0
        assert r.split == "train" and r.source == "synthetic_arithmetic"


def test_splits_are_disjoint_and_ops_configurable() -> None:
    train = {p for p in arithmetic_problems("train")}
    test = {p for p in arithmetic_problems("test")}
    assert train and test and not (train & test)
    test_recs = make_arithmetic_records(100, seed=0, split="test")
    assert all(
        PATTERN.match(r.problem).groups() not in {(str(a), o, str(b)) for a, o, b in train} for r in test_recs
    )
    plus_only = make_arithmetic_records(50, seed=0, ops=("+",))
    assert all(" + " in r.problem for r in plus_only)


def test_errors() -> None:
    with pytest.raises(ValueError, match="split"):
        make_arithmetic_records(3, split="validation")
    with pytest.raises(ValueError, match="distinct problems"):
        make_arithmetic_records(10**6, seed=0, split="test")
    with pytest.raises(ValueError, match="ops"):
        make_arithmetic_records(3, ops=("*",))
