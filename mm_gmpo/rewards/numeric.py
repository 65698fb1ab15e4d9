"""Answer normalisation, exact number parsing and a small safe LaTeX arithmetic evaluator.

The evaluator works on Python floats only (no big integers, no symbolic algebra), has a
recursion bound and refuses exponents past a fixed size, so its cost is linear in the
input and it can never hang; it never calls ``eval``/``exec``. Anything it does not
understand makes it return None, and the caller falls back to math-verify.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

# ---------------------------------------------------------------- normalisation

_SPACING = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~")
_LEFT_RIGHT = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])")
_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree|\\circ")
_TEXT_BLOCK = re.compile(r"\\(?:text|textrm|mbox|mathrm|textnormal|operatorname)\s*\{([^{}]*)\}")
_DIGIT_SPACE = re.compile(r"(\d)\s+(?=\d)")


def clean(s: str) -> str:
    """Drop math delimiters, spacing macros and trailing punctuation; keep the content.

    Why: answers arrive as "$\\frac{1}{2}$.\\n" from datasets and "\\dfrac12" from models;
    these layout differences must not decide correctness.
    """
    s = s.replace("\x00", "").replace("\\$", "").replace("$", "").strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\displaystyle", "")
    s = _LEFT_RIGHT.sub("", s)
    s = _SPACING.sub(" ", s)
    s = s.replace("\\%", "%")
    s = s.strip()
    while s and s[-1] in ".,;" and not s.endswith("\\,"):
        s = s[:-1].rstrip()
    return s


def squash(s: str) -> str:
    """Canonical string form for exact comparison: cleaned, text macros unwrapped, no spaces.

    Why: the cheapest and safest equality test; when the strings agree no parser is needed.
    """
    s = clean(s)
    s = _TEXT_BLOCK.sub(r"\1", s)
    s = _DEGREE.sub("", s)
    s = s.replace("{,}", ",")
    # A space between digits separates numbers ("3 1/4" is a mixed number, not 31/4).
    s = _DIGIT_SPACE.sub("\\1\x01", s)
    return re.sub(r"\s+", "", s).replace("\x01", " ")


_UNIT_WORDS = (
    r"square\s+units?|sq\.?\s*units?|units?|cm|mm|km|inch(?:es)?|ft|feet|foot|meters?|"
    r"centimeters?|millimeters?|yards?|yd|miles?|degrees?|deg|cents?|dollars?|hours?|minutes?|"
    r"seconds?|sec|days?|years?"
)
_UNIT_TAIL = r")(?:\s*\^\s*\{?\s*[23]\s*\}?)?\s*$"
# strict: the unit word is separated by a space ("5 cm"); loose also takes "5cm" and "5 m".
_TRAILING_UNIT_STRICT = re.compile(r"\s(?:" + _UNIT_WORDS + _UNIT_TAIL)
_TRAILING_UNIT_LOOSE = re.compile(r"(?:\s|(?<=\d))(?:" + _UNIT_WORDS + r"|m|in" + _UNIT_TAIL)
_TEXT_UNIT = re.compile(
    r"\\(?:text|textrm|mbox|mathrm|textnormal)\s*\{\s*[A-Za-z][A-Za-z .]*\}(?:\s*\^\s*\{?\s*-?[0-9]\s*\}?)*"
)
# "\\text{1.25 cm}^2": a number written inside a text block with its unit.
_TEXT_NUMBER = re.compile(r"\\(?:text|textrm|mbox|mathrm|textnormal)\s*\{\s*([+-]?(?:\d|\.\d)[^{}]*)\}")


def strip_units(s: str, loose: bool = False) -> str:
    """Remove degree marks, currency signs and unit words/blocks from a numeric answer.

    Why: "45^\\circ", "45°", "5 cm", "864 \\mbox{ inches}^2", "\\text{1.25 cm}^2" and
    "\\$18.90" state a number; the unit is not what is graded. If nothing but the unit is left, the input is returned
    unchanged (then the answer really is text, e.g. "\\text{east}"). ``loose`` (geometry)
    also strips units glued to the number and the one-letter "m": in general math "6m" is
    more often six times the variable m than six metres.
    """
    out = clean(s)
    out = _DEGREE.sub("", out)
    out = out.replace("\\$", "").replace("\\textdollar", "")
    out = _TEXT_NUMBER.sub(r" \1", out)
    out = _TEXT_UNIT.sub(" ", out)
    trailing = _TRAILING_UNIT_LOOSE if loose else _TRAILING_UNIT_STRICT
    for _ in range(3):
        new = trailing.sub("", out).strip()
        if new == out:
            break
        out = new
    out = out.strip()
    return out if out else clean(s)


_LHS_VAR = re.compile(r"^\s*(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?[A-Za-z0-9]+\}?)?\s*$")

# Named quantities of geometry answers: "AC", "m\angle XYZ", "\overline{AB}", "A_{\square}",
# "\text{Area}". Macros are an allow-list of decorations and Greek letters, so that an
# expression ("\frac{dM}{dt}", "\sin x", "2x + y") is never taken for a name. Every letter
# run ends at a non-letter (the lookaheads), so the pattern cannot backtrack exponentially.
_NAME_DECORATIONS = (
    r"angle|measuredangle|triangle|overline|overarc|overparen|widehat|wideparen|arc|"
    r"overrightarrow|vec|hat|bar|text|textrm|textit|mathrm|mathit|operatorname"
)
_NAME_MACROS = (
    _NAME_DECORATIONS + r"|square|Box|odot|alpha|beta|gamma|Gamma|delta|Delta|theta|Theta|phi|"
    r"varphi|Phi|psi|omega|Omega|lambda|mu|rho|sigma|tau|epsilon|varepsilon|eta|kappa|nu|xi|chi|zeta"
)
_NAME_PART = (
    r"(?:[A-Za-z]+(?![A-Za-z])"
    r"|\\(?:" + _NAME_MACROS + r")(?![A-Za-z])(?:\s*\{[A-Za-z ]*\})?"
    r"|_(?:\{[^{}=]{1,20}\}|[A-Za-z0-9]|\\[A-Za-z]+(?![A-Za-z]))"
    r"|')"
)
_LHS_NAME = re.compile(r"^\s*(?:" + _NAME_PART + r"\s*){1,8}$")
_NAME_DECORATION = re.compile(
    r"^\s*m(?=\s*\\(?:measured)?angle)|\\(?:" + _NAME_DECORATIONS + r")(?![A-Za-z])|[{}\s]"
)


def split_equation(s: str) -> tuple[str, str] | None:
    """Split "x = 5" into ("x", "5"); also "AC = 7.5" and "m\\angle XYZ = 30^\\circ"; else None.

    Why: "x = 5" and "5" are the same answer to "find x", and "N = n" vs "N = n+1" must be
    judged on the right-hand sides (math-verify folds the case of symbols and gets it wrong).
    A lone variable always splits. A longer name (a segment, an angle, an area) splits only
    when the right side has a digit: "AC = 7.5" states a value, while "SRAC = LRAC" (an
    economics condition) is an equation that is itself the answer.
    """
    if s.count("=") != 1 or any(t in s for t in ("\\le", "\\ge", "<", ">", "\\ne")):
        return None
    lhs, rhs = s.split("=")
    if not rhs.strip():
        return None
    if _LHS_VAR.match(lhs) or (
        len(lhs) <= 60 and any(c.isdigit() for c in rhs) and _LHS_NAME.match(lhs) is not None
    ):
        return lhs.strip(), rhs.strip()
    return None


def name_key(lhs: str) -> str:
    """Comparable form of an equation's left side: "m\\angle XYZ" and "\\angle xyz" -> "xyz".

    Why: two answers that name the same quantity with different decoration ("AC" and
    "\\overline{AC}") state the same thing; the case of letters carries no meaning here.
    """
    return _NAME_DECORATION.sub("", clean(lhs)).lower() or squash(lhs).lower()


# ---------------------------------------------------------------- exact plain numbers

_PLAIN = re.compile(r"^([+-]?)(\d{1,3}(?:,\d{3})+|\d+)?(?:\.(\d+))?$")
_SCI_TIMES = re.compile(r"^(.+?)(?:\\times|\\cdot|\*|x)10\^\{?([+-]?\d{1,4})\}?$")
_SCI_E = re.compile(r"^([+-]?\d*\.?\d+)[eE]([+-]?\d{1,4})$")
_POW10 = re.compile(r"^([+-]?)10\^\{?([+-]?\d{1,4})\}?$")
_FRAC = re.compile(r"^([+-]?)\\frac\{?([+-]?\d{1,12})\}?\{?(\d{1,12})\}?$")
_SLASH = re.compile(r"^([+-]?\d{1,12})/(\d{1,12})$")
_MIXED = re.compile(r"^([+-]?)(\d{1,6})\\frac(?:\{(\d{1,6})\}|(\d))(?:\{(\d{1,6})\}|(\d))$")
# "3 1/4": read before spaces are dropped, which would make it 31/4.
_MIXED_SLASH = re.compile(r"^([+-]?)(\d{1,6})\s+(\d{1,6})\s*/\s*(\d{1,6})$")


def _mixed(sign: str, whole: str, num: str, den: str) -> Fraction | None:
    """``whole num/den`` as one number when num/den is a proper fraction ("3 1/4" = 13/4)."""
    n, d = int(num), int(den)
    if d == 0 or n >= d:
        return None
    value = int(whole) + Fraction(n, d)
    return -value if sign == "-" else value


def _plain(s: str) -> Fraction | None:
    m = _PLAIN.match(s)
    if not m or (m.group(2) is None and m.group(3) is None):
        return None
    whole = (m.group(2) or "0").replace(",", "")
    frac = m.group(3) or ""
    value = Fraction(int(whole + frac), 10 ** len(frac))
    return -value if m.group(1) == "-" else value


def parse_number(s: str) -> Fraction | None:
    """Exact value of a plainly written number, or None.

    Accepts integers (also "10,080" thousands groups), decimals (".35"), percents (the
    number before "%"), "4.5e33", "4.4 \\times 10^{7}", "10^{-3}", "\\frac{3}{56}", "-3/2"
    and mixed numbers "1\\frac{4}{5}", "-3\\frac14", "3 1/4". Why: exact rational comparison
    settles the bulk of numeric answers without sympy and without math-verify's absolute
    6-decimal rounding, which equates 8.2e-19 with 8.2e-20.
    """
    c = clean(s)
    m = _MIXED_SLASH.match(c)
    if m:
        return _mixed(*m.groups())
    t = re.sub(r"\s+", "", c).replace("{,}", ",")
    if not t or len(t) > 60:
        return None
    if t.endswith("%"):
        t = t[:-1]
    v = _plain(t)
    if v is not None:
        return v
    m = _SCI_E.match(t)
    if m:
        base = _plain(m.group(1))
        return None if base is None else base * Fraction(10) ** int(m.group(2))
    m = _SCI_TIMES.match(t)
    if m:
        base = _plain(m.group(1))
        return None if base is None else base * Fraction(10) ** int(m.group(2))
    m = _POW10.match(t)
    if m:
        v = Fraction(10) ** int(m.group(2))
        return -v if m.group(1) == "-" else v
    m = _FRAC.match(t)
    if m and int(m.group(3)) != 0:
        v = Fraction(int(m.group(2)), int(m.group(3)))
        return -v if m.group(1) == "-" else v
    m = _SLASH.match(t)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    m = _MIXED.match(t)
    if m:  # "1\frac{4}{5}" is 1 + 4/5 only when it is a proper fraction
        return _mixed(m.group(1), m.group(2), m.group(3) or m.group(4), m.group(5) or m.group(6))
    return None


def decimals_written(s: str) -> int | None:
    """Number of digits after the decimal point when ``s`` is a plain decimal ("4.70" -> 2).

    Why: a decimal answer was rounded to that many places, which sets how close another
    form of the same value has to be (see ``geometry.numbers_match``).
    """
    t = re.sub(r"\s+", "", strip_units(s, loose=True))
    m = _PLAIN.match(t)
    if not m or m.group(3) is None:
        return None
    return len(m.group(3))


# ---------------------------------------------------------------- safe float evaluator

_MAX_EVAL_LEN = 300
_MAX_DEPTH = 40
_MAX_EXPONENT = 400.0

_TOKEN = re.compile(
    r"\s*(?:(\d+\.?\d*|\.\d+)|(\\[A-Za-z]+)|([-+*/^(){}\[\]])|(.))",
    re.DOTALL,
)
_FUNCS = {
    "\\sin": math.sin,
    "\\cos": math.cos,
    "\\tan": math.tan,
    "\\ln": math.log,
    "\\log": math.log10,
}


class _EvalError(Exception):
    pass


class _Parser:
    """Recursive descent over a token list; every failure raises _EvalError."""

    def __init__(self, tokens: list[tuple[str, str]]):
        self.toks = tokens
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise _EvalError("end of input")
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        kind, v = self.take()
        if v != value:
            raise _EvalError(f"expected {value}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _EvalError("too deep")

    def expr(self) -> float:
        self.enter()
        value = self.term()
        while (tok := self.peek()) is not None and tok[1] in "+-" and tok[0] == "op":
            self.take()
            rhs = self.term()
            value = value + rhs if tok[1] == "+" else value - rhs
        self.depth -= 1
        return value

    def _starts_atom(self, tok: tuple[str, str] | None) -> bool:
        if tok is None:
            return False
        kind, v = tok
        return (
            kind in ("num", "val")
            or v in ("(", "{", "[")
            or (kind == "cmd" and v not in ("\\cdot", "\\times", "\\div"))
        )

    def term(self) -> float:
        value = self.factor()
        while True:
            tok = self.peek()
            if tok is None:
                return value
            if tok[1] in ("*", "\\cdot", "\\times"):
                self.take()
                value = value * self.factor()
            elif tok[1] in ("/", "\\div"):
                self.take()
                den = self.factor()
                if den == 0:
                    raise _EvalError("division by zero")
                value = value / den
            elif self._starts_atom(tok):
                value = value * self.factor()  # implicit product: 2\sqrt{3}, 12\pi
            else:
                return value

    def factor(self) -> float:
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] in "+-":
            self.take()
            inner = self.factor()
            return -inner if tok[1] == "-" else inner
        return self.power()

    def power(self) -> float:
        base = self.atom()
        tok = self.peek()
        if tok is not None and tok[1] == "^":
            self.take()
            nxt = self.peek()
            if nxt is not None and nxt[0] == "num":
                # LaTeX x^23 is x^2 * 3: an unbraced exponent is one character.
                self.take()
                digits = nxt[1]
                exp = float(digits[0])
                if len(digits) > 1:
                    self.toks.insert(self.i, ("num", digits[1:]))
            else:
                self.enter()
                exp = self.factor()
                self.depth -= 1
            if abs(exp) > _MAX_EXPONENT:
                raise _EvalError("exponent too large")
            try:
                result = base**exp
            except (OverflowError, ZeroDivisionError) as e:
                raise _EvalError(str(e)) from e
            if isinstance(result, complex):
                raise _EvalError("complex")
            return result
        return base

    def group(self) -> float:
        self.expect("{")
        value = self.expr()
        self.expect("}")
        return value

    def atom(self) -> float:
        kind, v = self.take()
        if kind in ("num", "val"):
            return float(v)
        if v in ("(", "{", "["):
            close = {"(": ")", "{": "}", "[": "]"}[v]
            value = self.expr()
            self.expect(close)
            return value
        if kind == "cmd":
            if v == "\\frac":
                num = self._arg()
                den = self._arg()
                if den == 0:
                    raise _EvalError("division by zero")
                return num / den
            if v == "\\sqrt":
                index = 2.0
                if (tok := self.peek()) is not None and tok[1] == "[":
                    self.take()
                    index = self.expr()
                    self.expect("]")
                radicand = self._arg()
                if radicand < 0 or index == 0:
                    raise _EvalError("bad root")
                return radicand ** (1.0 / index)
            if v == "\\pi":
                return math.pi
            if v in _FUNCS:
                arg = self.factor()
                try:
                    return _FUNCS[v](math.radians(arg) if v in ("\\sin", "\\cos", "\\tan") else arg)
                except ValueError as e:
                    raise _EvalError(str(e)) from e
        raise _EvalError(f"unsupported token {v!r}")

    def _arg(self) -> float:
        """A macro argument: {expr} or a single digit (\\frac12)."""
        tok = self.peek()
        if tok is not None and tok[0] == "num":
            self.take()
            digits = tok[1]
            if len(digits) > 1:
                self.toks.insert(self.i, ("num", digits[1:]))
            return float(digits[0])
        if tok is not None and tok[1] == "{":
            return self.group()
        return self.atom()


Token = tuple[str, str]
# A mixed number is read only where it stands as a term of its own: after these tokens
# (or at the start) and before these (or at the end). "2\\frac{1}{2}\\pi" stays a product.
_TERM_START = ("+", "-", "(", "{", "[")
_TERM_END = ("+", "-", ")", "}", "]")


def _integer(tok: Token | None) -> int | None:
    if tok is None or tok[0] != "num" or not tok[1].isdigit():
        return None
    return int(tok[1])


def _fraction_after(tokens: list[Token], i: int) -> tuple[int, int, int] | None:
    """(numerator, denominator, next index) of integer-only ``\\frac`` arguments at ``i``:
    ``\\frac{1}{4}`` or ``\\frac14``; ``n/d`` when ``slash``."""
    if i < len(tokens) and tokens[i] == ("cmd", "\\frac"):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if nxt is not None and nxt[0] == "num" and len(nxt[1]) == 2 and nxt[1].isdigit():
            return int(nxt[1][0]), int(nxt[1][1]), i + 2
        window = [t[1] for t in tokens[i + 1 : i + 7]]
        if len(window) == 6 and window[0] == window[3] == "{" and window[2] == window[5] == "}":
            num, den = _integer(tokens[i + 2]), _integer(tokens[i + 5])
            if num is not None and den is not None:
                return num, den, i + 7
        return None
    num, den = _integer(tokens[i] if i < len(tokens) else None), None
    if num is not None and i + 2 < len(tokens) and tokens[i + 1] == ("op", "/"):
        den = _integer(tokens[i + 2])
    return None if den is None else (num, den, i + 3)


def _merge_mixed_numbers(tokens: list[Token]) -> list[Token]:
    """Fold "3\\frac{1}{4}" and "3 1/4" into one value token (3.25), not a product (0.75).

    Why: a whole number written right before a proper fraction is a mixed number in answers
    ("13\\frac{1}{4}" is an option value, 13.25 the same answer); the fold happens only for
    a proper fraction of integers standing as its own term.
    """
    out: list[Token] = []
    i, n = 0, len(tokens)
    while i < n:
        whole = _integer(tokens[i])
        if whole is not None and (not out or out[-1][1] in _TERM_START):
            frac = _fraction_after(tokens, i + 1)
            if frac is not None:
                num, den, end = frac
                if 0 < num < den and (end == n or tokens[end][1] in _TERM_END):
                    out.append(("val", repr(whole + num / den)))
                    i = end
                    continue
        out.append(tokens[i])
        i += 1
    return out


def _tokenize(s: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(s):
        num, cmd, op, other = m.groups()
        if num is not None:
            tokens.append(("num", num))
        elif cmd is not None:
            tokens.append(("cmd", cmd))
        elif op is not None:
            tokens.append(("op", op))
        elif other is not None and not other.isspace():
            raise _EvalError(f"unsupported character {other!r}")
    return _merge_mixed_numbers(tokens)


def evaluate(s: str, loose_units: bool = False) -> float | None:
    """Float value of a closed-form LaTeX number ("2\\sqrt{221}", "\\frac{40}{3}", "12\\pi").

    Why: comparing geometry answers numerically needs exact forms and decimals on one scale;
    this covers the arithmetic that appears in answers without sympy's cost or risks.
    Returns None for anything with variables, sets, text or odd structure.
    """
    if not isinstance(s, str):
        return None
    t = strip_units(s, loose=loose_units)
    if not t or len(t) > _MAX_EVAL_LEN or "," in t or "=" in t:
        return None
    try:
        tokens = _tokenize(t)
        if not tokens:
            return None
        parser = _Parser(tokens)
        value = parser.expr()
        if parser.peek() is not None:
            return None
    except (_EvalError, RecursionError, ValueError, OverflowError):
        return None
    if not isinstance(value, float) or not math.isfinite(value):
        return None
    return value
