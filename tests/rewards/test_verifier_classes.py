"""The error classes of issue #18, each in both directions: what must score 1 and what must
score 0 (hedges, coarse decimals, a wrong letter with a right-looking value).

The cases are a table of calls to the public verifier functions, so that the same table can be
run against another version of the code to count what changed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from mm_gmpo import rewards


class Case(NamedTuple):
    cls: str  # the error class
    func: str  # a function of mm_gmpo.rewards
    args: tuple[Any, ...]
    expected: Any


NUMS = ["6", "8", "10", "12", r"3\sqrt{2}\text{ m}"]  # options A-E
WORDED = ["red", "blue", "green", "yellow", "This cannot be worked out for certain."]
LETTERED = ["either A or B", "only C", "only D", "either C or D", "A, B, C or D"]
MIXED = [r"12\frac{3}{4}", r"13\frac{1}{4}", r"13\frac{1}{2}", "14", "15"]
THIRDS = [r"\frac{2}{3}", "1", r"\frac{3}{2}", "2", "3"]


def g(response: str, answer: str, choices: list[str] | None = None, expected: float = 1.0) -> Case:
    return Case("", "geometry_accuracy", (response, answer, choices), expected)


CASES: list[Case] = [
    # ---- a boxed letter followed by its option text: the letter decides, the text must agree
    *(
        Case("letter+text", c.func, c.args, c.expected)
        for c in [
            g(r"<think>t</think> \boxed{\textbf{(E) } 3\sqrt{2}\text{ m}}", "E", NUMS),
            g(r"\boxed{(D)\ 12}", "D", NUMS),
            g(r"\boxed{D. 12}", "D", NUMS),
            g(r"\boxed{(D) 12}", "D"),  # a letter gold without options
            g(r"\boxed{\text{(E) } 3\sqrt{2}\text{ m}}", "E"),
            g(r"\boxed{(B) Blue}", "B", WORDED),  # worded option, paraphrased: the letter decides
            # wrong letter with the right-looking value
            g(r"\boxed{(C) 12}", "D", NUMS, 0.0),
            g(r"\boxed{(C)\ 12}", "D", None, 0.0),
            # right letter with another option's value, or with a wrong number: names two things
            g(r"\boxed{(D) 10}", "D", NUMS, 0.0),
            g(r"\boxed{(D) 13}", "D", NUMS, 0.0),
            Case("", "math_equal", (r"(C)\ 12", r"\text{(C)}"), True),
            Case("", "math_equal", (r"(B)\ 12", r"\text{(C)}"), False),
            Case("", "math_equal", (r"(C)+1", r"\text{(C)}"), False),  # not option text
        ]
    ),
    # ---- letters in other forms
    *(
        Case("letter forms", c.func, c.args, c.expected)
        for c in [
            g(r"\boxed{\text{C}}", "C", NUMS),
            g(r"\boxed{(c)}", "C", NUMS),
            g(r"\boxed{(c)}", "C"),
            g(r"\boxed{\textbf{C}}", "C"),
            g(r"\boxed{\mathrm{(C)}}", "C", NUMS),
            g(r"\boxed{\text{Option C}}", "C", NUMS),
            g(r"\boxed{(b)}", "C", NUMS, 0.0),
            g(r"\boxed{c}", "C", NUMS, 0.0),  # a bare lower-case letter is a variable
            Case("", "extract_choice", (r"so \boxed{\textbf{(D)}}",), "D"),
        ]
    ),
    # ---- hedges: a response naming several options scores 0, whichever is right
    *(
        Case("hedges", c.func, c.args, c.expected)
        for c in [
            g("<think>t</think> The answer is (A), (C), and (E).", "A", NUMS, 0.0),
            g("The answer is (A), (C), and (E).", "A", None, 0.0),
            g("So the answer is A or C.", "A", NUMS, 0.0),
            g("It must be (A) or (C).", "A", NUMS, 0.0),
            g(r"\boxed{A, C, E}", "A", NUMS, 0.0),
            g(r"\boxed{(A) \text{ or } (C)}", "A", NUMS, 0.0),
            g(r"\boxed{\text{A or C}}", "A", None, 0.0),
            g(r"\boxed{(A) 6 \text{ or } (C) 10}", "A", NUMS, 0.0),
            g(r"\boxed{A, B, C or D}", "D", LETTERED, 0.0),  # option E's text, not D
            # one option named: still right
            g("So the answer is (A).", "A", NUMS),
            g("(B) and (C) fail, so it is (A).", "A", NUMS),
            g(r"\boxed{either C or D}", "D", LETTERED),  # the text of option D
            Case("", "math_accuracy", (r"\boxed{(A) \text{ or } (C)}", "A"), 0.0),
            Case("", "math_equal", ("A, C", r"\text{(A)}"), False),
            Case("", "extract_choice", ("the answer is B and C",), None),
        ]
    ),
    # ---- mixed numbers are sums, not products
    *(
        Case("mixed numbers", c.func, c.args, c.expected)
        for c in [
            Case("", "geometry_equal", ("13.25", r"13\frac{1}{4}"), True),
            Case("", "geometry_equal", (r"13\frac14", "13.25"), True),
            Case("", "geometry_equal", ("3 1/4", "3.25"), True),
            Case("", "geometry_equal", (r"-2\frac{1}{2}", "-2.5"), True),
            Case("", "math_equal", ("3 1/4", r"\frac{13}{4}"), True),
            g(r"\boxed{13.25}", "B", MIXED),
            Case("", "geometry_equal", ("0.75", r"3\frac{1}{4}"), False),
            Case("", "geometry_equal", ("0.75", "3 1/4"), False),
            Case("", "math_equal", ("31/4", "3 1/4"), False),
            Case("", "math_equal", ("3 1/4", "7.75"), False),
            g(r"\boxed{13.5}", "B", MIXED, 0.0),
        ]
    ),
    # ---- decimals: as precise as the gold's form warrants
    *(
        Case("decimal precision", c.func, c.args, c.expected)
        for c in [
            Case("", "geometry_equal", ("0.7", r"\frac{2}{3}"), False),
            Case("", "geometry_equal", ("0.0", r"\frac{1}{700}"), False),
            Case("", "geometry_equal", ("2.0", r"\frac{81}{40}"), False),
            Case("", "geometry_equal", ("1.4", r"\sqrt{2}"), False),
            Case("", "geometry_equal", ("2.8", r"2\sqrt{2}"), False),
            Case("", "geometry_equal", ("4.7", "4.69"), False),  # coarser than a decimal gold
            Case("", "geometry_equal", ("13.4", r"\frac{40}{3}"), False),  # last digit wrong
            g(r"\boxed{0.7}", "A", THIRDS, 0.0),
            Case("", "math_equal", ("0.7", r"\frac{2}{3}"), False),
            Case("", "geometry_equal", ("0.67", r"\frac{2}{3}"), True),
            Case("", "geometry_equal", ("0.667", r"\frac{2}{3}"), True),
            Case("", "geometry_equal", ("0.00143", r"\frac{1}{700}"), True),
            Case("", "geometry_equal", ("2.03", r"\frac{81}{40}"), True),
            Case("", "geometry_equal", ("1.41", r"\sqrt{2}"), True),
            Case("", "geometry_equal", ("9.9", r"7\sqrt{2}"), True),
            Case("", "geometry_equal", ("4.69", "4.7"), True),
            Case("", "geometry_equal", ("0.5", r"\frac{1}{2}"), True),
            Case("", "geometry_equal", (r"\frac{1}{2}", "0.5"), True),
            Case("", "geometry_equal", ("66.0", "66"), True),
            g(r"\boxed{0.667}", "A", THIRDS),
        ]
    ),
    # ---- named quantities: "AC = 7.5" states 7.5
    *(
        Case("named quantities", c.func, c.args, c.expected)
        for c in [
            Case("", "geometry_equal", ("AC = 7.5", "7.5"), True),
            Case("", "geometry_equal", (r"m\angle XYZ = 30^\circ", "30"), True),
            Case("", "geometry_equal", (r"A_{\square} = 12", "12"), True),
            Case("", "geometry_equal", (r"\overline{AB} = 2\sqrt{3}", "3.46"), True),
            Case("", "math_equal", ("AC = 7.5", r"\frac{15}{2}"), True),
            Case("", "math_equal", (r"m\angle XYZ = 30", r"\angle XYZ = 30"), True),
            g(r"<think>t</think> \boxed{BC = 8}", "B", NUMS),
            Case("", "geometry_equal", ("AC = 7.4", "7.5"), False),
            Case("", "geometry_equal", (r"m\angle XYZ = 31^\circ", "30"), False),
            Case("", "math_equal", ("AC = 7.5", "BC = 7.5"), False),
            Case("", "math_equal", ("2x + y = 12", "12"), False),  # an expression is not a name
            Case("", "math_equal", ("LRAC", "SRAC=LRAC"), False),  # an equation answer stays one
        ]
    ),
    # ---- numbers written inside \text{} with their unit
    *(
        Case("numbers in text", c.func, c.args, c.expected)
        for c in [
            Case("", "geometry_equal", (r"\text{1.25 cm}^2", "1.25"), True),
            Case("", "geometry_equal", (r"\text{12 m}", "12"), True),
            Case("", "math_equal", (r"\text{1.25 cm}^2", r"\frac{5}{4}"), True),
            g(r"\boxed{\text{10 m}}", "C", NUMS),
            Case("", "geometry_equal", (r"\text{1.35 cm}^2", "1.25"), False),
            Case("", "geometry_equal", (r"\text{12 m}", "13"), False),
        ]
    ),
]


def _case_id(case: Case) -> str:
    return f"{case.cls}:{case.func}:{case.args[0]!s:.40}->{case.expected}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_verifier_class(case: Case) -> None:
    assert getattr(rewards, case.func)(*case.args) == case.expected


def test_every_class_is_tested_both_ways() -> None:
    """Each class has cases that must pass and cases that must fail (no one-sided class)."""
    accept, reject = {}, {}
    for c in CASES:
        good = c.expected not in (0.0, False, None)
        (accept if good else reject)[c.cls] = True
    assert set(accept) == set(reject) == {c.cls for c in CASES}
