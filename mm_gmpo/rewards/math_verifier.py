"""Is a response's final answer equal to the ground truth? (text path, paper protocol: 1/0)

Order of checks, cheapest and safest first:
  1. canonical strings equal (``numeric.squash``);
  2. choice letters ("\\text{(C)}" vs "C", "(C) 12"; a list of letters is no answer);
  3. "x = 5" and "AC = 7.5" forms: compare right-hand sides;
  4. exact rational comparison of plainly written numbers (``numeric.parse_number``), which
     settles them either way: math-verify rounds floats to 6 decimals and would equate
     8.2e-19 with 8.2e-20;
  5. a float evaluation of closed forms on both sides (relative 1e-6);
  6. math-verify (``parse`` + ``verify``) for everything symbolic: sets, intervals,
     matrices, expressions, equations.
Before step 6 a guard refuses inputs that make sympy blow up (power towers, big factorials,
huge exponents, deep nesting, very long answers): those can only match by string. The guard
is an optimisation; the hard time limit of the batch scorer is what bounds the time.

math-verify's own signal timeouts are switched off here: the caller (the scorer's worker
process) owns the time limit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from mm_gmpo.rewards.extract import choice_letter, final_answer, letter_of
from mm_gmpo.rewards.numeric import (
    clean,
    evaluate,
    name_key,
    parse_number,
    split_equation,
    squash,
    strip_units,
)

GroundTruth = str | int | float | Sequence[str]

# Answers longer than this are compared as strings only.
MAX_SYMBOLIC_LEN = 600
_MAX_BRACE_DEPTH = 12
_REL_TOL = 1e-6

_POWER_TOWER = re.compile(r"\^\s*\{[^{}]*\^|\^\s*\d+\s*\^|\^\s*\{[^{}]*\{[^{}]*\^")
_BIG_EXPONENT = re.compile(r"\^\s*\{?\s*[+-]?\s*\d{5,}")
_BIG_INTEGER = re.compile(r"\d{60,}")
_BIG_BINOMIAL = re.compile(r"\\[dt]?binom\s*\{?\s*\d{5,}|\\(?:Gamma|gamma)\s*\(?\{?\s*\d{5,}")
_FACTORIAL = re.compile(r"(?<!\\)!")
_SMALL_FACTORIAL = re.compile(r"(?<![\d.])\d{1,3}\s*!")


def _brace_depth(s: str) -> int:
    depth = best = 0
    for c in s:
        if c == "{" or c == "(" or c == "[":
            depth += 1
            best = max(best, depth)
        elif c == "}" or c == ")" or c == "]":
            depth -= 1
    return best


def too_risky_for_sympy(s: str) -> bool:
    """True for answers that can make symbolic evaluation explode in time or memory.

    Why: ``9^{9^{9^9}}`` or ``(10^{10^{10}})!`` make sympy build integers with billions of
    digits inside C code that no signal interrupts; such an answer is never the intended
    final answer, so refusing it costs no correct reward and saves a killed worker.
    """
    if len(s) > MAX_SYMBOLIC_LEN or _brace_depth(s) > _MAX_BRACE_DEPTH:
        return True
    if any(p.search(s) for p in (_POWER_TOWER, _BIG_EXPONENT, _BIG_INTEGER, _BIG_BINOMIAL)):
        return True
    bangs = len(_FACTORIAL.findall(s))
    if bangs and bangs != len(_SMALL_FACTORIAL.findall(s)):
        return True
    return "\x00" in s


def _mv():
    # Imported lazily so that importing mm_gmpo.rewards stays cheap in the trainer process.
    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return math_verify


@lru_cache(maxsize=8192)
def _parse_latex(s: str, units: bool = True) -> tuple[Any, ...]:
    """math-verify parse of a cleaned answer string (cached: golds repeat G times a step).

    ``units=False`` turns off math-verify's unit stripping, which otherwise reads the
    variables m, t, c, s... as metres, tonnes, ... and drops them.
    """
    mv = _mv()
    if units:
        return tuple(mv.parse("$" + s + "$", parsing_timeout=None))
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig, NormalizationConfig

    config = LatexExtractionConfig(normalization_config=NormalizationConfig(units=False))
    return tuple(mv.parse("$" + s + "$", [config, ExprExtractionConfig()], parsing_timeout=None))


_COMMAND = re.compile(r"\\[A-Za-z]+")
_SET_MEMBER = re.compile(r"^\s*[A-Za-z]\s*\\in(?![A-Za-z])")


def _variables(s: str) -> frozenset[str]:
    """Single-letter symbols in an answer, lower-cased, without macros, units, e and i."""
    t = _SET_MEMBER.sub("", squash(strip_units(s)))
    t = _COMMAND.sub(" ", t)
    return frozenset(c.lower() for c in t if c.isascii() and c.isalpha()) - {"e", "i"}


def _lossy(parsed: tuple[Any, ...], variables: frozenset[str]) -> bool:
    """True when the parse dropped variables of the text: "6m" -> 6 (m read as metres),
    "\\frac{1}{m}t" -> 1/m, "\\hbar\\omega(v+1/2)-..." -> 2."""
    symbols = getattr(parsed[0], "free_symbols", None)
    if symbols is None:
        return False
    letters = {c.lower() for sym in symbols for c in str(sym) if c.isalpha()}
    return not variables <= letters


def _parse_checked(s: str) -> tuple[Any, ...]:
    parsed = _parse_latex(s)
    if parsed and _lossy(parsed, _variables(s)):
        parsed = _parse_latex(s, units=False)
        if parsed and _lossy(parsed, _variables(s)):
            return ()
    return parsed


def _symbolic_equal(pred: str, gt: str) -> bool:
    if too_risky_for_sympy(pred) or too_risky_for_sympy(gt):
        return False
    if _variables(pred) != _variables(gt):
        return False
    gold = _parse_checked(gt)
    target = _parse_checked(pred)
    if not gold or not target:
        return False
    return bool(_mv().verify(list(gold), list(target), timeout_seconds=None))


def _numbers_equal(a: float, b: float) -> bool:
    return abs(a - b) <= max(_REL_TOL * max(abs(a), abs(b)), 1e-12)


def math_equal(pred: str, gt: str, _depth: int = 0) -> bool:
    """True when answer string ``pred`` equals ground-truth string ``gt``.

    Why: the single equality rule of the text path (see the module docstring for the order
    of checks). Never raises on ordinary failures; a string that cannot be understood is
    simply not equal.
    """
    if not isinstance(pred, str) or not isinstance(gt, str):
        return False
    p, g = clean(pred), clean(gt)
    if not p or not g:
        return False
    if squash(p) == squash(g):
        return True
    gl = letter_of(g)
    if gl is not None:
        return choice_letter(p) == gl
    if _depth == 0:
        pe, ge = split_equation(p), split_equation(g)
        if pe and ge:
            if name_key(pe[0]) != name_key(ge[0]):
                return False
            return math_equal(pe[1], ge[1], 1)
        if pe and not ge:
            return math_equal(pe[1], g, 1)
        if ge and not pe:
            return math_equal(p, ge[1], 1)
    pu, gu = strip_units(p), strip_units(g)
    pn, gn = parse_number(pu), parse_number(gu)
    if pn is not None and gn is not None:
        return pn == gn
    pf, gf = evaluate(pu), evaluate(gu)
    if pf is not None and gf is not None:
        return _numbers_equal(pf, gf)
    return _symbolic_equal(p, g)


def ground_truths(answer: GroundTruth) -> list[str]:
    """All accepted forms of a ground truth as strings (lists: any element may match).

    Why: datasets store answers as strings, floats ("142.0" in AMC) or lists (Minerva,
    OlympiadBench); verifiers want one shape.
    """
    if isinstance(answer, bool):
        return [str(answer)]
    if isinstance(answer, int):
        return [str(answer)]
    if isinstance(answer, float):
        return [str(int(answer))] if answer.is_integer() else [repr(answer)]
    if isinstance(answer, str):
        return [answer.strip()]
    if isinstance(answer, Sequence):
        out: list[str] = []
        for a in answer:
            out.extend(ground_truths(a))
        return out
    return [str(answer)]


def answer_matches(pred: str | None, answer: GroundTruth) -> bool:
    """True when ``pred`` equals any accepted form of ``answer``.

    Why: the list-valued ground truths of Minerva/OlympiadBench accept any element.
    """
    if pred is None:
        return False
    return any(math_equal(pred, g) for g in ground_truths(answer) if g)


def math_accuracy(response: str, answer: GroundTruth, truncated: bool = False) -> float:
    """Paper reward for the text path: 1.0 if the last boxed answer is right, else 0.0.

    Why: GMPO/Dr.GRPO grade only the final ``\\boxed{}``; a truncated response (no
    end-of-sequence token) has no trustworthy final answer and gets 0.
    """
    if truncated or not isinstance(response, str):
        return 0.0
    return 1.0 if answer_matches(final_answer(response), answer) else 0.0
