"""Pull the final answer out of a model response.

Every function here takes any string (200 KB, NUL bytes, unbalanced braces, odd unicode) and
returns ``None`` when there is nothing to extract; none of them raises. They run in linear
time: brace matching is a counter scan and the regexes have no nested quantifiers, so a
hostile response cannot make extraction itself slow.
"""

from __future__ import annotations

import re

from mm_gmpo.rewards.numeric import clean

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


_LETTER_WRAPPERS = re.compile(
    r"\\(?:text|textbf|textrm|textsf|textit|mathrm|mathbf|mathit|mathsf|mbox)\s*\{([^{}]*)\}"
)
_OPTION_WORD = re.compile(r"^(?i:option|choice)\s+(?=\(?[A-Ea-e]\b)")
# A bare letter: "B", "(B)", "B.", "B)", "B:", and lower-case only in brackets, "(b)" (a
# bare "b" is as likely a variable).
_BARE_LETTER = re.compile(r"^(?:\(?\s*([A-E])\s*[).:]?|\(\s*([a-e])\s*\))\s*\.?$")
# A letter followed by its option text: "(E) 3\sqrt{2} m", "C. 12", "(c) 12". The text is
# set off by a space: "(C)+1" is not an option's text.
_LETTER_LEAD = re.compile(r"^(?:\(\s*([A-Ea-e])\s*\)|([A-E])\s*[).:])\s+(\S.*)$", re.DOTALL)
# Option markers inside an answer: "(C)" / "(c)", or a capital A-E standing alone.
_MARKER = re.compile(r"\(\s*([A-Ea-e])\s*\)|(?<![A-Za-z\\])([A-E])(?![A-Za-z])")
_UPPER_PAREN_MARKER = re.compile(r"\(\s*([A-E])\s*\)")
# What may sit between the letters of a list: "(A), (C), and (E)", "A or C", "A/C", "A \& C".
_LIST_FILLER = re.compile(r"(?i:\b(?:and|or|both|either)\b)|[\s,;/&.:\\]+")
_MAX_LETTER_ANSWER = 200


def _unwrapped(answer: str) -> str:
    """The answer without math delimiters, spacing macros and text/bold wrappers."""
    s = clean(answer)
    for _ in range(3):  # \text{\textbf{B}} at most a few levels deep
        s2 = _LETTER_WRAPPERS.sub(r"\1", s)
        if s2 == s:
            break
        s = s2
    return _OPTION_WORD.sub("", s.strip()).strip()


def letter_of(answer: str | None) -> str | None:
    """Return ``"B"`` when ``answer`` is just a choice letter ("B", "(B)", "B.", "(b)",
    "\\text{B}", "\\textbf{(B)}", "Option B").

    Why: a boxed answer to a multiple-choice problem is often the letter with decoration;
    values like "5" or "x" must not be mistaken for letters.
    """
    if not isinstance(answer, str) or len(answer) > _MAX_LETTER_ANSWER:
        return None
    m = _BARE_LETTER.match(_unwrapped(answer))
    if not m:
        return None
    return (m.group(1) or m.group(2)).upper()


def named_letters(answer: str | None) -> list[str]:
    """The distinct option letters of an answer that is only a list of letters ("(A), (C),
    and (E)", "A or C", "B"), in order; ``[]`` for anything else.

    Why: an answer naming several options is a hedge; it must not earn the point of the one
    that happens to be right.
    """
    if not isinstance(answer, str) or len(answer) > _MAX_LETTER_ANSWER:
        return []
    s = _unwrapped(answer)
    letters: list[str] = []
    for paren, bare in _MARKER.findall(s):
        letter = (paren or bare).upper()
        if letter not in letters:
            letters.append(letter)
    if not letters or _LIST_FILLER.sub("", _MARKER.sub("", s)):
        return []
    return letters


def names_several_options(answer: str | None) -> bool:
    """True when ``answer`` names more than one option: "A, C", "(A) or (C)", "(A) 12 or (C)"."""
    if len(named_letters(answer)) > 1:
        return True
    stated = _letter_lead(answer)
    return stated is not None and _rest_names_other_letter(stated[0], stated[1])


def _letter_lead(answer: str | None) -> tuple[str, str] | None:
    if not isinstance(answer, str) or len(answer) > _MAX_LETTER_ANSWER:
        return None
    m = _LETTER_LEAD.match(_unwrapped(answer))
    if not m:
        return None
    return (m.group(1) or m.group(2)).upper(), m.group(3).strip()


def _rest_names_other_letter(letter: str, rest: str) -> bool:
    others = {m.upper() for m in _UPPER_PAREN_MARKER.findall(rest)} | set(named_letters(rest))
    return bool(others - {letter})


def stated_option(answer: str | None) -> tuple[str, str] | None:
    """``(letter, option text)`` of an answer that commits to one option, else None.

    "B" -> ("B", ""); "\\textbf{(E) } 3\\sqrt{2}\\text{ m}" -> ("E", "3\\sqrt{2} m");
    "(C)\\ 12" -> ("C", "12"). None for values ("12"), and for answers naming several
    options ("A, C", "(A) 12 or (C)"). Why: models often copy the option text after the
    letter; the letter is the commitment, the text lets the caller check it agrees.
    """
    letters = named_letters(answer)
    if len(letters) == 1:
        return letters[0], ""
    if letters:
        return None
    stated = _letter_lead(answer)
    if stated is None or _rest_names_other_letter(*stated):
        return None
    return stated


def choice_letter(answer: str | None) -> str | None:
    """The one option letter an answer commits to (bare or followed by its option text);
    None for values and for answers naming several options."""
    stated = stated_option(answer)
    return stated[0] if stated else None


_OPT = r"\(?[A-E]\)?(?![A-Za-z0-9])"
_LIST_SEP = r"(?:\s*[,;/&]\s*|\s+)(?:(?:and|or)\s+)?"
_ANSWER_IS = re.compile(
    r"(?i:answer)(?:\s{1,4}(?i:is|are))?[\s:]{0,8}(" + _OPT + r"(?:" + _LIST_SEP + _OPT + r")*)"
)
_PAREN_LIST = re.compile(r"\([A-E]\)(?:" + _LIST_SEP + r"\([A-E]\))*")


def _single_letter(listed: str) -> str | None:
    letters = set(re.findall(r"[A-E]", listed))
    return letters.pop() if len(letters) == 1 else None


def extract_choice(text: str) -> str | None:
    """Return the choice letter (A-E) a response commits to, or None.

    Why: multiple-choice problems are graded on the letter. Looked for, in order: the last
    ``\\boxed{B}`` (also "\\boxed{(B) 12}"); the last "answer is B" / "Answer: (B)"; the last
    "(B)" in the answer region. A statement naming several letters ("the answer is (A), (C)
    and (E)", "\\boxed{A, C}") commits to none and yields None.
    """
    if not isinstance(text, str) or not text:
        return None
    region = answer_region(text)
    boxed = last_boxed(region)
    if boxed is not None:
        if names_several_options(boxed):
            return None
        letter = choice_letter(boxed)
        if letter is not None:
            return letter
    tail = region[-_TAIL_CHARS:]
    found = None
    for m in _ANSWER_IS.finditer(tail):
        found = m.group(1)
    if found is None:
        for m in _PAREN_LIST.finditer(tail):
            found = m.group(0)
    return None if found is None else _single_letter(found)
