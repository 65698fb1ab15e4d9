"""Real-data checks: every ground truth of the eval sets verifies against itself when boxed,
and a perturbed one does not. Runs through the batch scorer (2 workers, hard limit on).

The verdicts are the verifier's, not the machine's load: an answer that hits the scorer's
short time limit (a loaded 2-core box) is scored again under a patient limit, and the test
asserts that every answer gets a verdict and the verdict is right. Time-outs are printed,
never asserted on (timing belongs in bench/)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mm_gmpo.rewards import RewardScorer, ScoreResult, letter_of

MATH_SETS = ["aime24", "amc23", "math500", "minerva_math", "olympiadbench"]

# Perturbed ground truths that are accepted or time out, with the reason. Keys: (set, index).
# Kept empty on purpose when nothing is ambiguous; the test prints what it finds.
AMBIGUOUS: dict[tuple[str, int], str] = {}

# The limit an answer that timed out is scored again under: far above any answer's cost
# (the slowest perturbed answer takes under 2 s alone), so only a hang would reach it.
PATIENT_LIMIT_S = 120.0


def settled_accuracy(kind: str, responses: list[str], records: list[dict], result: ScoreResult) -> list:
    """Accuracy per answer, with the answers that timed out scored again under
    ``PATIENT_LIMIT_S``; None where even that gave no verdict."""
    accuracy: list = list(result.accuracy)
    slow = [i for i, t in enumerate(result.timed_out) if t]
    if slow:
        with RewardScorer(kind, timeout_s=PATIENT_LIMIT_S, num_workers=1) as patient:
            again = patient.score([responses[i] for i in slow], [records[i] for i in slow])
        for i, a, t in zip(slow, again.accuracy, again.timed_out):
            accuracy[i] = None if t else a
    return accuracy


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
    good_responses = [r"\boxed{" + _first(r["answer"]) + "}" for r in rows]
    bad_responses = [r"\boxed{" + perturb(_first(r["answer"])) + "}" for r in rows]
    good = math_scorer.score(good_responses, recs)
    bad = math_scorer.score(bad_responses, recs)
    good_acc = settled_accuracy("math", good_responses, recs, good)
    bad_acc = settled_accuracy("math", bad_responses, recs, bad)
    verified = sum(1 for a in good_acc if a == 1.0)
    rejected = sum(1 for a in bad_acc if a == 0.0)
    print(
        f"\n{name}: verified {verified}/{len(rows)}, perturbed rejected {rejected}/{len(rows)} "
        f"(time-outs at the {math_scorer.pool.timeout_s:g} s limit, scored again: "
        f"{good.num_timeouts} + {bad.num_timeouts}), {good.seconds + bad.seconds:.2f}s"
    )
    missed = [i for i, a in enumerate(good_acc) if a != 1.0]
    accepted = [i for i, a in enumerate(bad_acc) if a != 0.0 and (name, i) not in AMBIGUOUS]
    for i in missed:
        print("  not verified:", rows[i]["answer"], "(no verdict)" if good_acc[i] is None else "")
    for i in accepted:
        print("  perturbed accepted or no verdict:", _first(rows[i]["answer"]), "->", bad_responses[i])
    assert not missed
    assert not accepted
    assert not any(good.errored) and not any(bad.errored)


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
    accuracy = settled_accuracy("geometry", responses, records, res)
    n_given = kinds.count("as given")
    n_value = kinds.count("choice value")
    ok_given = sum(1 for a, k in zip(accuracy, kinds) if k == "as given" and a == 1.0)
    ok_value = sum(1 for a, k in zip(accuracy, kinds) if k == "choice value" and a == 1.0)
    print(
        f"\nmathvision testmini: answers verified {ok_given:.0f}/{n_given}, choice values {ok_value:.0f}/{n_value}"
    )
    for ans, choices in ambiguous:
        print("  ambiguous (choice value is another letter), value check skipped:", ans, choices)
    assert len(ambiguous) <= 3
    for resp, rec, a in zip(responses, records, accuracy):
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
    pert_responses = [r"\boxed{" + p + "}" for p in pert]
    bad = geometry_scorer.score(pert_responses, recs)
    rejected = sum(1 for a in settled_accuracy("geometry", pert_responses, recs, bad) if a == 0.0)
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
