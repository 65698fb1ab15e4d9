"""Real-data checks: every ground truth of the eval sets verifies against itself when boxed,
and a perturbed one does not. Runs through the batch scorer (2 workers, hard limit on)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mm_gmpo.rewards import letter_of

MATH_SETS = ["aime24", "amc23", "math500", "minerva_math", "olympiadbench"]

# Perturbed ground truths that are accepted or time out, with the reason. Keys: (set, index).
# Kept empty on purpose when nothing is ambiguous; the test prints what it finds.
AMBIGUOUS: dict[tuple[str, int], str] = {}


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def _first(answer) -> str:
    if isinstance(answer, list):
        return answer[0].strip()
    if isinstance(answer, float) and answer.is_integer():
        return str(int(answer))
    return str(answer).strip()


def perturb(gt: str) -> str:
    """+1 on the first integer of the answer (the value, not a base or unit exponent);
    answers without digits get "+1" appended."""
    m = re.search(r"\d+", gt)
    if not m:
        return gt + "+1"
    return gt[: m.start()] + str(int(m.group()) + 1) + gt[m.end() :]


@pytest.mark.parametrize("name", MATH_SETS)
def test_math_ground_truths_verify_and_perturbations_do_not(name, data_root, math_scorer):
    rows = _rows(data_root / "math" / f"{name}.jsonl")
    recs = [{"answer": r["answer"]} for r in rows]
    good = math_scorer.score([r"\boxed{" + _first(r["answer"]) + "}" for r in rows], recs)
    bad = math_scorer.score([r"\boxed{" + perturb(_first(r["answer"])) + "}" for r in rows], recs)
    verified = int(sum(good.accuracy))
    rejected = len(rows) - int(sum(bad.accuracy))
    print(
        f"\n{name}: verified {verified}/{len(rows)}, perturbed rejected {rejected}/{len(rows)} "
        f"(perturbed time-outs {bad.num_timeouts}), {good.seconds + bad.seconds:.2f}s"
    )
    missed = [i for i, a in enumerate(good.accuracy) if a != 1.0]
    accepted = [i for i, a in enumerate(bad.accuracy) if a != 0.0 and (name, i) not in AMBIGUOUS]
    for i in missed:
        print("  not verified:", rows[i]["answer"])
    for i in accepted:
        print("  perturbed accepted:", _first(rows[i]["answer"]), "->", perturb(_first(rows[i]["answer"])))
    assert not missed
    assert not accepted
    assert good.num_timeouts == 0 and good.num_errors == 0
    assert bad.num_timeouts <= 2  # a time-out scores 0 and is counted, never a hang


def _mathvision_records(data_root: Path) -> list[dict]:
    return [
        {"answer": str(r["answer"]).strip(), "choices": r["options"] or None}
        for r in _rows(data_root / "mathvision" / "testmini.jsonl")
    ]


def _next_letter(letter: str, n: int) -> str:
    return "ABCDEFGH"[("ABCDEFGH".index(letter) + 1) % max(n, 2)]


def test_mathvision_letters_and_values(data_root, geometry_scorer):
    recs = _mathvision_records(data_root)
    letters = "ABCDEFGH"
    responses: list[str] = []
    kinds: list[str] = []
    ambiguous: list[tuple[str, list[str]]] = []
    for rec in recs:
        ans, choices = rec["answer"], rec["choices"]
        responses.append(r"<think>t</think> \boxed{" + ans + "}")
        kinds.append("as given")
        if choices and ans in letters[: len(choices)]:
            value = choices[letters.index(ans)]
            # the value of the right choice, unless another choice has the same text, or
            # the value is itself another position's letter (choices [A, B, C, E, ...] with
            # answer D: "\boxed{E}" may mean the 5th choice or the value of the 4th)
            named = letter_of(value)
            if named is not None and named != ans:
                ambiguous.append((ans, choices))
            elif choices.count(value) == 1:
                responses.append(r"<think>t</think> \boxed{" + value.replace("$", "") + "}")
                kinds.append("choice value")
    records = _expand(recs, responses, kinds)
    res = geometry_scorer.score(responses, records)
    n_given = kinds.count("as given")
    n_value = kinds.count("choice value")
    ok_given = sum(a for a, k in zip(res.accuracy, kinds) if k == "as given")
    ok_value = sum(a for a, k in zip(res.accuracy, kinds) if k == "choice value")
    print(
        f"\nmathvision testmini: answers verified {ok_given:.0f}/{n_given}, choice values {ok_value:.0f}/{n_value}"
    )
    for ans, choices in ambiguous:
        print("  ambiguous (choice value is another letter), value check skipped:", ans, choices)
    assert len(ambiguous) <= 3
    for resp, rec, a in zip(responses, records, res.accuracy):
        if a != 1.0:
            print("  not verified:", resp, rec)
    assert ok_given == n_given
    assert ok_value == n_value
    # perturbed: the next letter for letter answers, +1 for values
    pert = []
    for rec in recs:
        ans, choices = rec["answer"], rec["choices"]
        if ans in letters and (choices or len(ans) == 1):
            pert.append(_next_letter(ans, len(choices) if choices else 5))
        else:
            pert.append(perturb(ans))
    bad = geometry_scorer.score([r"\boxed{" + p + "}" for p in pert], recs)
    rejected = len(recs) - int(sum(bad.accuracy))
    print(f"mathvision testmini: perturbed rejected {rejected}/{len(recs)}")
    assert rejected == len(recs)


def _expand(recs: list[dict], responses: list[str], kinds: list[str]) -> list[dict]:
    """The record of each response (one or two responses per record, in order)."""
    out, j = [], -1
    for k in kinds:
        if k == "as given":
            j += 1
        out.append(recs[j])
    return out
