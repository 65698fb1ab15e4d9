"""Geometry answer verifier for the VL path (Geometry3K, MathVision).

Answers look like ``2\\sqrt{221}``, ``\\frac{40}{3}``, ``4.7``, ``12\\pi``, ``45^\\circ``,
``45°``, ``x = 5``, ``5 cm`` or a choice letter. Two published Geometry3K layouts exist:
the original one carries ``choices`` and a letter answer, the parquet one the value of the
right choice as answer. Both are handled: the right choice is located first (by letter or by
value), then a response is right when it names that letter or states that choice's value.

Numeric tolerance (``numbers_match``): a decimal earns credit only when it is as precise as
the gold's own form warrants. The rule, for a response value r and a gold value g:
  * equal up to float noise (relative 1e-6): right, whatever the forms ("0.5" and "\\frac12");
  * gold written as a decimal with d places (Geometry3K prints "4.7" for 2\\sqrt{5.5} =
    4.690...): the gold was rounded to d places, so r is right when it rounds to the gold,
    |r - g| <= half a unit in the gold's last place. "4.69", "4.704" and 2\\sqrt{5.5} match
    "4.7"; "4.6" does not, and neither does the coarser "4.7" against a gold "4.69";
  * gold exact (an integer, a fraction, a root, pi) and r a decimal with d places: r must be
    g correctly rounded to d places (|r - g| <= half a unit in r's last place) and that
    half unit must be at most 1% of |g|. So "13.3" and "0.67" match 40/3 and 2/3 but
    "13.4" does not (its last digit is wrong), and "0.7" for 2/3, "0.0" for 1/700 and "2.0"
    for 81/40 do not (too coarse: their half unit, 0.05, is 7.5%, 3500% and 2.5% of g);
  * otherwise (an integer against an exact non-integer, two exact forms) only float noise.
Why this rule and not a fixed relative tolerance: a relative tolerance alone (say 1e-2)
credits answers whose last digit is wrong ("13.4" for 13.33) and gives a wide target to any
answer with few digits; half a unit of the *less* precise side (the rule before) credited
"\\boxed{0.7}" for 2/3, which a policy can learn to exploit by answering with one decimal.
Correct rounding at the response's own last place keeps every written digit honest, and the
1% floor on that last place means about three significant figures (two when the leading
digit is 5 or more): the usual convention for a rounded answer, stated without counting
digits, so 9.9 for 7\\sqrt{2} (0.5%) passes where 1.4 for \\sqrt{2} (3.5%) does not.
Integers and exact forms are never taken as rounded: "66" does not accept 66.4, and "7"
does not accept 2\\sqrt{13}. A tie (4.65 against 4.7) is credited: either rounding is usual.
"""

from __future__ import annotations

from collections.abc import Sequence

from mm_gmpo.rewards.extract import (
    answer_region,
    choice_letter,
    extract_choice,
    last_boxed,
    letter_of,
    names_several_options,
    stated_option,
)
from mm_gmpo.rewards.math_verifier import GroundTruth, ground_truths, math_equal
from mm_gmpo.rewards.numeric import decimals_written, evaluate, split_equation, squash, strip_units

_REL_TOL = 1e-6
# A decimal against an exact gold: half a unit of its last place may be at most this
# fraction of the gold's value (see the module docstring).
_MAX_RESOLUTION = 1e-2
LETTERS = "ABCDEFGH"


def _rhs(s: str) -> str:
    eq = split_equation(s)
    return eq[1] if eq else s


def numbers_match(pred: str, gt: str) -> bool | None:
    """Numeric equality of a response ``pred`` with a gold ``gt`` under the precision rule of
    the module docstring (the roles matter: the gold's form sets the precision).

    Returns None when either side is not a closed-form number (the caller then compares
    symbolically). Why: decide rounded decimals against exact forms the way a grader would,
    without crediting coarse roundings.
    """
    p, g = _rhs(pred), _rhs(gt)
    pv, gv = evaluate(p, loose_units=True), evaluate(g, loose_units=True)
    if pv is None or gv is None:
        return None
    diff = abs(pv - gv)
    if diff <= _REL_TOL * max(abs(pv), abs(gv), 1e-12):
        return True
    gold_places = decimals_written(g)
    if gold_places is not None:
        return diff <= _half_unit(gold_places)
    pred_places = decimals_written(p)
    if pred_places is not None:
        half = _half_unit(pred_places)
        return diff <= half and half <= _MAX_RESOLUTION * abs(gv)
    return False


def _half_unit(places: int) -> float:
    """Half a unit in the last of ``places`` decimal places, widened by float noise."""
    return 0.5 * 10.0 ** (-places) * (1 + 1e-9)


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
    """Index of the right choice: by letter, else by value; None when it cannot be told.

    The choice is the response side and the answer the gold: when the dataset's answer is a
    rounded value ("4.7"), its decimals set the precision the choice's exact form must meet.
    """
    letter = letter_of(answer)
    if letter is not None and LETTERS.index(letter) < len(choices):
        return LETTERS.index(letter)
    for i, c in enumerate(choices):
        if isinstance(c, str) and geometry_equal(c, answer):
            return i
    return None


def _text_contradicts(text: str, index: int, choices: Sequence[str]) -> bool:
    """True when the option text a response wrote after its letter is not that option's:
    it equals another option, or both are numbers and differ ("(C) 13" when C is 12).

    Why: "(B) 12" where 12 is option C names two options; other text (a paraphrase of a
    worded option) leaves the letter to decide.
    """
    chosen = choices[index]
    if not isinstance(chosen, str) or geometry_equal(text, chosen):
        return False
    others = (c for j, c in enumerate(choices) if j != index and isinstance(c, str))
    if any(geometry_equal(text, c) for c in others):
        return True
    return numbers_match(text, chosen) is False


def _stated_letter(pred: str, choices: Sequence[str]) -> tuple[str | None, bool]:
    """``(letter, valid)`` of a boxed answer to a multiple-choice problem. ``letter`` is None
    when the answer is a value; ``valid`` is False for a hedge or a letter whose option text
    contradicts it."""
    letter = letter_of(pred)
    if letter is not None:  # a bare letter is a letter, even when options are letters too
        return letter, True
    if any(isinstance(c, str) and squash(c) == squash(pred) for c in choices):
        return None, True  # the text of an option ("either C or D"): graded as a value
    if names_several_options(pred):
        return None, False
    stated = stated_option(pred)
    if stated is None:
        return None, True
    letter, text = stated
    index = LETTERS.index(letter)
    if text and index < len(choices) and _text_contradicts(text, index, choices):
        return letter, False
    return letter, True


def choice_answer_correct(pred: str | None, answer: str, choices: Sequence[str], response: str = "") -> bool:
    """Grade a multiple-choice answer: a letter must name the right choice, a value must
    equal the right choice's value; naming several options is wrong.

    Why: Geometry3K is published with letter answers and with value answers, and models
    answer with either (or with both, "(C) 12"); all combinations must grade the same way.
    """
    right = _right_choice_index(answer, choices)
    if pred is None:
        letter = extract_choice(response) if response else None
        if letter is None:
            return False
    else:
        letter, valid = _stated_letter(pred, choices)
        if not valid:
            return False
    if letter is not None:
        if right is not None:
            return LETTERS.index(letter) == right
        return letter_of(answer) == letter
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
                if choice_letter(pred) == gl:
                    return 1.0
            elif geometry_equal(pred, gt):
                return 1.0
        elif letter_of(gt) is not None and extract_choice(response) == letter_of(gt):
            return 1.0
    return 0.0
