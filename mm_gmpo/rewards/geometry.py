"""Geometry answer verifier for the VL path (Geometry3K, MathVision).

Answers look like ``2\\sqrt{221}``, ``\\frac{40}{3}``, ``4.7``, ``12\\pi``, ``45^\\circ``,
``45°``, ``x = 5``, ``5 cm`` or a choice letter. Two published Geometry3K layouts exist:
the original one carries ``choices`` and a letter answer, the parquet one the value of the
right choice as answer. Both are handled: the right choice is located first (by letter or by
value), then a response is right when it names that letter or states that choice's value.

Numeric tolerance (``numbers_match``): Geometry3K answers are printed rounded to one or two
decimals ("4.7" for 2\\sqrt{5.5}=4.690...), and a model may give the exact form or round
differently. Two numbers match when they differ by at most half a unit in the last place of
the less precise *decimal* among them (so "4.7" accepts 4.69, 4.7, 4.704 and 2\\sqrt{5.5},
but not 4.6 or 4.8). Integers and exact forms (fractions, roots, pi) are taken as exact: when
neither side is a decimal, the relative tolerance is 1e-6 (float noise only). So "66" does
not accept 66.4, and "\\frac{40}{3}" accepts its roundings 13.3 and 13.33 but not 13.4.
"""

from __future__ import annotations

from collections.abc import Sequence

from mm_gmpo.rewards.extract import answer_region, extract_choice, last_boxed, letter_of
from mm_gmpo.rewards.math_verifier import GroundTruth, ground_truths, math_equal
from mm_gmpo.rewards.numeric import decimals_written, evaluate, split_equation, squash, strip_units

_REL_TOL = 1e-6
LETTERS = "ABCDEFGH"


def _rhs(s: str) -> str:
    eq = split_equation(s)
    return eq[1] if eq else s


def numbers_match(pred: str, gt: str) -> bool | None:
    """Numeric equality with the rounding tolerance described in the module docstring.

    Returns None when either side is not a closed-form number (the caller then compares
    symbolically). Why: decide rounded decimals against exact forms the way a grader would.
    """
    p, g = _rhs(pred), _rhs(gt)
    pv, gv = evaluate(p, loose_units=True), evaluate(g, loose_units=True)
    if pv is None or gv is None:
        return None
    places = [d for d in (decimals_written(p), decimals_written(g)) if d is not None]
    tol = _REL_TOL * max(abs(pv), abs(gv), 1e-12)
    if places:
        tol = max(tol, 0.5 * 10.0 ** (-min(places)) * (1 + 1e-9))
    return abs(pv - gv) <= tol


def geometry_equal(pred: str, gt: str) -> bool:
    """True when answer ``pred`` states the same value as ``gt`` (units, degrees, "x =" aside).

    Why: the accuracy rule of the VL path; numbers with the rounding tolerance, everything
    else through the text path's symbolic comparison.
    """
    if not isinstance(pred, str) or not isinstance(gt, str):
        return False
    if squash(pred) == squash(gt) and squash(pred):
        return True
    num = numbers_match(pred, gt)
    if num is not None:
        return num
    return math_equal(strip_units(pred, loose=True), strip_units(gt, loose=True))


def _right_choice_index(answer: str, choices: Sequence[str]) -> int | None:
    """Index of the right choice: by letter, else by value; None when it cannot be told."""
    letter = letter_of(answer)
    if letter is not None and LETTERS.index(letter) < len(choices):
        return LETTERS.index(letter)
    for i, c in enumerate(choices):
        if isinstance(c, str) and geometry_equal(answer, c):
            return i
    return None


def choice_answer_correct(pred: str | None, answer: str, choices: Sequence[str], response: str = "") -> bool:
    """Grade a multiple-choice answer: a letter must name the right choice, a value must
    equal the right choice's value.

    Why: Geometry3K is published with letter answers and with value answers, and models
    answer with either; all four combinations must grade the same way.
    """
    right = _right_choice_index(answer, choices)
    letter = letter_of(pred) if pred is not None else None
    if letter is None and pred is None and response:
        letter = extract_choice(response)
    if letter is not None:
        if right is not None:
            return LETTERS.index(letter) == right
        return letter_of(answer) == letter
    if pred is None:
        return False
    if right is not None:
        return geometry_equal(pred, choices[right])
    return letter_of(answer) is None and geometry_equal(pred, answer)


def geometry_accuracy(
    response: str,
    answer: GroundTruth,
    choices: Sequence[str] | None = None,
    truncated: bool = False,
) -> float:
    """Accuracy reward (1/0) of the VL path for one response.

    Why: reads the final boxed answer (after ``</think>``), and for multiple choice also a
    stated letter ("Answer: B") when nothing is boxed; a truncated response gets 0.
    """
    if truncated or not isinstance(response, str):
        return 0.0
    pred = last_boxed(answer_region(response))
    for gt in ground_truths(answer):
        if not gt:
            continue
        if choices:
            if choice_answer_correct(pred, gt, list(choices), response):
                return 1.0
        elif pred is not None:
            gl = letter_of(gt)
            if gl is not None:
                if letter_of(pred) == gl:
                    return 1.0
            elif geometry_equal(pred, gt):
                return 1.0
        elif letter_of(gt) is not None and extract_choice(response) == letter_of(gt):
            return 1.0
    return 0.0
