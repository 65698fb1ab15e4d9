"""Math and geometry verifiers, format reward, combined reward (in-process, no workers)."""

from __future__ import annotations

import pytest

from mm_gmpo.rewards import (
    RewardWeights,
    answer_matches,
    combined_reward,
    format_reward,
    geometry_accuracy,
    geometry_equal,
    ground_truths,
    math_accuracy,
    math_equal,
    numbers_match,
)


@pytest.mark.parametrize(
    "pred, gt",
    [
        ("142", "142.0"),
        (r"\frac12", "0.5"),
        (r"\dfrac{3}{56}", r"\frac{3}{56}"),
        ("4/3", r"\frac43"),
        (r"1\frac{4}{5}", r"\frac{9}{5}"),
        ("10080", r"10,\!080"),
        ("32348", r"\$32,\!348"),
        ("5", "x=5"),
        ("x = 5", "5"),
        ("90", r"90^\circ"),
        ("864", r"864 \mbox{ inches}^2"),
        (r"2x+3", "y = 2x + 3"),
        (r"2(k+1)", "2k+2"),
        (r"\sqrt{2}\cdot 11", r"11\sqrt2"),
        (r"\{-2, 1\}", "1,-2"),
        (r"\left(3,\frac{\pi}{2}\right)", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"4.4 \times 10^{7}", "4.4e7"),
        ("C", r"\text{(C)}"),
        (r"\frac{t}{m}", r"\frac{1}{m}t"),
    ],
)
def test_math_equal_accepts_equivalent_forms(pred, gt):
    assert math_equal(pred, gt)


@pytest.mark.parametrize(
    "pred, gt",
    [
        ("143", "142.0"),
        (r"8.224 \times 10^{-20}", r"8.224 \times 10^{-19}"),  # math-verify alone says equal
        ("N=n+1", "N=n"),  # math-verify alone says equal (case folding)
        ("6", "6m"),  # math-verify alone reads m as metres
        ("(3,4)", "(3,4]"),
        ("q-p", "p-q"),
        ("B", r"\text{(C)}"),
        ("", "5"),
        (r"\frac{1}{m}", r"\frac{1}{m}t"),
    ],
)
def test_math_equal_rejects_different_answers(pred, gt):
    assert not math_equal(pred, gt)


def test_ground_truth_shapes():
    assert ground_truths(142.0) == ["142"]
    assert ground_truths(2.5) == ["2.5"]
    assert ground_truths(["9.6\n", "9.60"]) == ["9.6", "9.60"]
    assert answer_matches("0.02", ["0.01\n", "0.02\n"])
    assert not answer_matches("0.03", ["0.01\n", "0.02\n"])
    assert not answer_matches(None, "1")


def test_math_accuracy_paper_protocol():
    assert math_accuracy(r"... so \boxed{204}", "204") == 1.0
    assert math_accuracy(r"... so \boxed{204}", "204", truncated=True) == 0.0
    assert math_accuracy("204", "204") == 0.0  # no boxed answer
    assert math_accuracy(r"\boxed{204} wait, \boxed{205}", "204") == 0.0  # the last box counts


@pytest.mark.parametrize(
    "pred, gt",
    [
        (r"2\sqrt{221}", "29.73"),
        (r"2\sqrt{221}", r"2\sqrt{221}"),
        ("13.33", r"\frac{40}{3}"),
        ("13.3", r"\frac{40}{3}"),
        (r"2\sqrt{5.5}", "4.7"),
        ("4.69", "4.7"),
        ("37.70", r"12\pi"),
        ("45", r"45^\circ"),
        ("45°", "45"),
        (r"45^{\circ}", "45°"),
        ("x = 5", "5"),
        ("5 cm", "5"),
        ("66", "66"),
        (r"\frac{\sqrt{3}}{2}", "0.87"),
    ],
)
def test_geometry_equal_accepts(pred, gt):
    assert geometry_equal(pred, gt)


@pytest.mark.parametrize(
    "pred, gt",
    [
        ("4.6", "4.7"),
        ("66.4", "66"),
        ("13.4", r"\frac{40}{3}"),
        ("46", r"45^\circ"),
        ("12", r"12\pi"),
        ("6 cm", "5"),
        (r"2\sqrt{220}", r"2\sqrt{221}"),
    ],
)
def test_geometry_equal_rejects(pred, gt):
    assert not geometry_equal(pred, gt)


def test_tolerance_is_set_by_the_golds_form():
    # a decimal gold: the response must round to it at the gold's places
    assert numbers_match("4.75", "4.7")
    assert not numbers_match("4.76", "4.7")
    assert numbers_match("3.464", "3.46")
    assert not numbers_match("3.47", "3.464")  # the gold has 3 places: tolerance 0.0005
    assert not numbers_match("4.7", "4.69")  # the rule is not symmetric: the gold's form decides
    # an exact gold: the decimal must be rounded right and fine to 1% of the value
    assert numbers_match("0.67", r"\frac{2}{3}")
    assert not numbers_match("0.7", r"\frac{2}{3}")
    assert not numbers_match("13.4", r"\frac{40}{3}")
    assert numbers_match("x", "1") is None


CHOICES = ["4", r"2\sqrt{3}", "6", "8"]


@pytest.mark.parametrize(
    "response, answer, expected",
    [
        # original layout: letter answer
        (r"<think>..</think> \boxed{B}", "B", 1.0),
        (r"<think>..</think> \boxed{2\sqrt{3}}", "B", 1.0),
        (r"<think>..</think> \boxed{3.46}", "B", 1.0),
        (r"<think>..</think> \boxed{C}", "B", 0.0),
        (r"<think>..</think> \boxed{6}", "B", 0.0),
        ("<think>..</think> Answer: B", "B", 1.0),
        # parquet layout: the value is the answer
        (r"\boxed{B}", r"2\sqrt{3}", 1.0),
        (r"\boxed{2\sqrt{3}}", r"2\sqrt{3}", 1.0),
        (r"\boxed{A}", r"2\sqrt{3}", 0.0),
        (r"\boxed{8}", r"2\sqrt{3}", 0.0),
    ],
)
def test_geometry_multiple_choice_both_layouts(response, answer, expected):
    assert geometry_accuracy(response, answer, CHOICES) == expected


def test_geometry_letter_choices_that_are_letters():
    letters = ["A", "B", "C", "D", "E"]
    assert geometry_accuracy(r"\boxed{D}", "D", letters) == 1.0
    assert geometry_accuracy(r"\boxed{E}", "D", letters) == 0.0
    assert geometry_accuracy(r"\boxed{D}", "D", letters, truncated=True) == 0.0


def test_format_reward():
    assert format_reward(r"<think>reason</think> so \boxed{5}") == 1.0
    assert format_reward(r"  <think>reason</think>\boxed{5}.  ") == 1.0
    assert format_reward(r"reason \boxed{5}") == 0.0
    assert format_reward(r"<think>reason \boxed{5}") == 0.0
    assert format_reward(r"<think>a</think><think>b</think>\boxed{5}") == 0.0
    assert format_reward(r"<think>\boxed{5}</think> done") == 0.0
    assert format_reward(r"<think>a</think> \boxed{5") == 0.0


def test_combined_reward_weights():
    assert combined_reward(1.0, 1.0) == pytest.approx(1.0)
    assert combined_reward(0.0, 1.0) == pytest.approx(0.1)
    assert combined_reward(1.0, 0.0) == pytest.approx(0.9)
    assert combined_reward(1.0, 1.0, RewardWeights(accuracy=0.5, format=0.25)) == pytest.approx(0.75)
