"""Pull the final answer out of a model response.

Every function here takes any string (200 KB, NUL bytes, unbalanced braces, odd unicode) and
returns ``None`` when there is nothing to extract; none of them raises. They run in linear
time: brace matching is a counter scan and the regexes have no nested quantifiers, so a
hostile response cannot make extraction itself slow.
"""

from __future__ import annotations

import re

# \boxed and \fbox are what the prompt templates ask for; both are accepted.
_BOX_TOKENS = ("\\boxed", "\\fbox")
# How many \boxed occurrences (from the end) are tried when the last ones are unbalanced.
# Bounded so that "\boxed{" repeated 10,000 times stays linear.
_MAX_BOX_TRIES = 8
# Letter patterns only look at the tail of a response: the answer is stated at the end.
_TAIL_CHARS = 4000

_THINK_CLOSE = "</think>"


def _match_braces(text: str, open_pos: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_pos``, or None when it never closes."""
    depth = 0
    i = open_pos
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "{}":
            i += 2  # an escaped brace (\{ or \}) is content, not structure
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _box_content_at(text: str, pos: int, token: str) -> str | None:
    """Content of the box whose token starts at ``pos``: ``{...}`` or the next bare word."""
    i = pos + len(token)
    n = len(text)
    if i < n and (text[i].isalpha()):
        return None  # \boxedfoo is another macro, not a box
    while i < n and text[i] in " \t":
        i += 1
    if i >= n:
        return None
    if text[i] == "{":
        end = _match_braces(text, i)
        if end is None:
            return None
        return text[i + 1 : end]
    # "\boxed 5": the argument is the following run of non-space characters.
    j = i
    while j < n and not text[j].isspace() and text[j] not in "$\\":
        j += 1
    word = text[i:j].rstrip(".,;")
    return word or None


def last_boxed(text: str) -> str | None:
    """Return the content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``.

    Why: rewards grade only the final boxed answer (the prompt templates ask for it), and
    earlier boxes are intermediate results. Nested braces are matched; ``\\boxed 5`` works too.
    """
    if not isinstance(text, str) or not text:
        return None
    positions: list[tuple[int, str]] = []
    for token in _BOX_TOKENS:
        end = len(text)
        for _ in range(_MAX_BOX_TRIES):
            p = text.rfind(token, 0, end)
            if p < 0:
                break
            positions.append((p, token))
            end = p
    positions.sort(reverse=True)
    for p, token in positions[:_MAX_BOX_TRIES]:
        content = _box_content_at(text, p, token)
        if content is not None:
            return content.strip()
    return None


def after_think(text: str) -> str | None:
    """Return what follows the last ``</think>``, or None when the reasoning block never closes.

    Why: in the ``<think>``/``\\boxed{}`` recipe the answer belongs after the reasoning; a
    response whose thinking never ends has no answer section.
    """
    if not isinstance(text, str):
        return None
    p = text.rfind(_THINK_CLOSE)
    if p < 0:
        return None
    return text[p + len(_THINK_CLOSE) :]


def answer_region(text: str) -> str:
    """The part of a response an answer is read from: after ``</think>`` if there is one.

    Why: a box inside the reasoning is a draft; when the reasoning is closed, only the text
    after it counts. Responses without think tags (the text path's qwen_math template) are
    read whole.
    """
    if not isinstance(text, str):
        return ""
    tail = after_think(text)
    return text if tail is None else tail


def final_answer(text: str) -> str | None:
    """The final boxed answer of a response (after ``</think>`` when present), or None.

    Why: the one rule both verifiers use to decide what the model answered.
    """
    return last_boxed(answer_region(text))


_LETTER_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textit)\s*\{([^{}]*)\}")
_BARE_LETTER = re.compile(r"^\(?\s*([A-E])\s*[).:]?\s*\.?$")
_ANSWER_IS = re.compile(r"(?i:answer)(?:\s{1,4}(?i:is))?[\s:]{0,8}\(?([A-E])\)?(?![A-Za-z0-9])")
_PAREN_LETTER = re.compile(r"\(([A-E])\)")


def letter_of(answer: str | None) -> str | None:
    """Return ``"B"`` when ``answer`` is just a choice letter ("B", "(B)", "B.", "\\text{B}").

    Why: a boxed answer to a multiple-choice problem is often the letter with decoration;
    values like "5" or "x" must not be mistaken for letters.
    """
    if not isinstance(answer, str):
        return None
    s = answer.strip().replace("$", "")
    if len(s) > 40:
        return None
    for _ in range(3):  # \text{\textbf{B}} at most a few levels deep
        s2 = _LETTER_WRAPPERS.sub(r"\1", s)
        if s2 == s:
            break
        s = s2
    m = _BARE_LETTER.match(s.strip())
    return m.group(1) if m else None


def extract_choice(text: str) -> str | None:
    """Return the choice letter (A-E) a response commits to, or None.

    Why: multiple-choice problems are graded on the letter. Looked for, in order: the last
    ``\\boxed{B}``; the last "answer is B" / "Answer: (B)"; the last "(B)" in the answer region.
    """
    if not isinstance(text, str) or not text:
        return None
    region = answer_region(text)
    boxed = last_boxed(region)
    if boxed is not None:
        letter = letter_of(boxed)
        if letter is not None:
            return letter
    tail = region[-_TAIL_CHARS:]
    found = None
    for m in _ANSWER_IS.finditer(tail):
        found = m.group(1)
    if found is not None:
        return found
    for m in _PAREN_LETTER.finditer(tail):
        found = m.group(1)
    return found
