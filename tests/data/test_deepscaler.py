"""DeepScaleR-Preview, the R1-Distill recipe's training set, in its published layout.

The hub dataset ``agentica-org/DeepScaleR-Preview-Dataset`` is one file, ``deepscaler.json``: a
JSON list of objects with ``problem``, ``answer`` (a LaTeX string) and ``solution``. The fixture
is five rows written in exactly that layout (own problems, not copied from the dataset).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mm_gmpo.data.loaders import load_records, load_records_with_report
from mm_gmpo.data.records import BadRecordError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "deepscaler" / "deepscaler.json"
RECIPE = Path(__file__).resolve().parents[2] / "configs" / "paper_text_r1distill_gmpo.yaml"
HUB_ID = "agentica-org/DeepScaleR-Preview-Dataset"


def _rows() -> list[dict]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_fixture_is_the_published_layout() -> None:
    rows = _rows()
    assert isinstance(rows, list) and len(rows) == 5
    assert all(set(row) == {"problem", "answer", "solution"} for row in rows)
    assert all(isinstance(v, str) for row in rows for v in row.values())


def test_problem_and_answer_map_and_solution_is_kept(math_scorer) -> None:
    result = load_records_with_report(FIXTURE, on_bad_record="error")
    rows = _rows()
    assert (result.n_rows, result.n_skipped) == (5, 0)
    assert [r.problem for r in result.records] == [row["problem"] for row in rows]
    assert [r.answer for r in result.records] == [row["answer"] for row in rows]
    assert [r.metadata["solution"] for r in result.records] == [row["solution"] for row in rows]
    assert [r.id for r in result.records] == [f"deepscaler-{i}" for i in range(5)]
    # The LaTeX answers verify as the recipe's reward reads them: the last \boxed{} after </think>.
    right = [
        f"<think>draft \\boxed{{0}}</think> So the answer is $\\boxed{{{r.answer}}}$." for r in result.records
    ]
    assert math_scorer.score(right, result.records).accuracy == [1.0] * 5
    equivalent = ["\\boxed{0.75}", "\\boxed{12}", "\\boxed{\\sqrt{12}}", "\\boxed{\\pi/6}", "\\boxed{11.0}"]
    assert math_scorer.score(equivalent, result.records).accuracy == [1.0] * 5
    wrong = [
        "</think>\\boxed{\\frac{4}{3}}",
        "\\boxed{10}",
        "\\boxed{3\\sqrt{2}}",
        "\\boxed{\\pi/3}",
        "\\boxed{5}",
    ]
    assert math_scorer.score(wrong, result.records).accuracy == [0.0] * 5


def test_bad_rows_are_counted_and_skipped_or_named(tmp_path: Path) -> None:
    rows = _rows()
    bad = [
        {"problem": "No answer here.", "solution": "..."},
        {"problem": "   ", "answer": "1", "solution": ""},
        {"answer": "3", "solution": "no problem field"},
        {"problem": "Empty answer.", "answer": "", "solution": ""},
        "a stray string",
        None,
    ]
    path = _write(tmp_path / "deepscaler.json", [rows[0], *bad, rows[1]])
    result = load_records_with_report(path, on_bad_record="skip")
    assert [r.answer for r in result.records] == [rows[0]["answer"], rows[1]["answer"]]
    assert result.n_rows == 8 and result.n_skipped == 6
    assert result.skipped == {
        "missing answer key 'answer'": 1,
        "empty problem": 1,
        "missing question key 'problem'": 1,
        "empty or unusable answer": 1,
        "not a JSON object": 2,
    }
    with pytest.raises(BadRecordError, match=r"row 1: missing answer key 'answer'"):
        load_records(path, on_bad_record="error")
    path = _write(tmp_path / "stray.json", [rows[0], "a stray string"])
    with pytest.raises(BadRecordError, match=r"stray\.json: element 1: a JSON str, not an object"):
        load_records(path, on_bad_record="error")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('"just text"', r"expected a JSON list of rows, got a JSON str"),
        ("42", r"expected a JSON list of rows, got a JSON int"),
        ('{"a": [], "b": []}', r"expected a JSON list of rows \(or an object with one list field\)"),
        ('[{"problem": "p", "answer": "1"},\n {"problem": ', r"invalid JSON at line 2, column"),
    ],
)
def test_a_file_that_is_not_a_json_list_stops_with_its_name(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "deepscaler.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        load_records(path, on_bad_record="skip")
    assert str(path) in str(info.value)


def test_the_recipes_hub_id_loads_through_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipe's ``data.train`` (the hub id, train split) goes through ``datasets.load_dataset``;
    the hub itself is replaced by the fixture's rows, as ``datasets`` would return them."""
    import datasets

    import mm_gmpo.data.loaders as loaders
    from mm_gmpo.train.build import load_split_report
    from mm_gmpo.train.config import load_config

    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        ds = datasets.DatasetDict({"train": datasets.Dataset.from_list(_rows())})
        return ds if split is None else ds[split]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(
        loaders, "check_dataset_id", lambda repo_id, field: calls.append(("checked", repo_id))
    )
    cfg = load_config(RECIPE)
    assert cfg.data.train == f"{HUB_ID}@train"
    result = load_split_report(cfg.data.train, cfg, "train")
    assert calls == [("checked", HUB_ID), (HUB_ID, None, "train")]
    local = load_records(FIXTURE)
    assert [(r.problem, r.answer, r.metadata) for r in result.records] == [
        (r.problem, r.answer, r.metadata) for r in local
    ]
