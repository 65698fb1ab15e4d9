"""Math text sets: jsonl / parquet / arrow read alike; list answers stay lists; bad keys named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep import math_text
from data_prep.__main__ import main
from data_prep.common import DataFormatError
from mm_gmpo.data.record_io import read_records

ROWS = [
    {"question": "1+1?", "solution": "2", "uid": "a", "level": 1},
    {"question": "Half as decimal\u2028(U+2028 inside)?", "solution": ["0.5", "\\frac{1}{2}\n"], "uid": "b"},
    {"question": "AMC style", "solution": 142.0, "uid": "c"},
    {"question": "Broken row", "solution": "", "uid": "d"},
]
KEYS = {"problem_key": "question", "answer_key": "solution", "id_key": "uid"}


def _write(tmp_path: Path, fmt: str) -> Path:
    if fmt == "jsonl":
        path = tmp_path / "set.jsonl"
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n", encoding="utf-8")
        return path
    import datasets

    # Arrow/parquet need one type per column, as real releases have: list answers as lists.
    rows = [
        {**r, "solution": r["solution"] if isinstance(r["solution"], list) else [str(r["solution"])]}
        for r in ROWS
    ]
    ds = datasets.Dataset.from_list(rows)
    if fmt == "parquet":
        path = tmp_path / "set.parquet"
        ds.to_parquet(str(path))
        return path
    path = tmp_path / "set_arrow"
    datasets.DatasetDict({"test": ds}).save_to_disk(str(path))
    return path


def test_jsonl_answers_kept_as_given(tmp_path):
    recs, dropped = math_text.convert(_write(tmp_path, "jsonl"), source="s", split="test", **KEYS)
    assert dropped == 1
    assert [r.id for r in recs] == ["s-a", "s-b", "s-c"]
    assert recs[0].answer == "2" and recs[0].metadata == {"level": 1}
    assert recs[1].answer == ["0.5", "\\frac{1}{2}"]  # list kept, whitespace trimmed
    assert recs[1].problem == ROWS[1]["question"]  # U+2028 did not split the line
    assert recs[2].answer == "142.0"


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_parquet_and_arrow_read_like_jsonl(tmp_path, fmt):
    recs, dropped = math_text.convert(_write(tmp_path, fmt), source="s", split="test", **KEYS)
    assert dropped == 1
    assert [r.problem for r in recs] == [r["question"] for r in ROWS[:3]]
    assert [r.answer for r in recs] == [["2"], ["0.5", "\\frac{1}{2}"], ["142.0"]]


def test_empty_answer_can_fail(tmp_path):
    with pytest.raises(DataFormatError, match=r"set\.jsonl: field 'solution \(row 3\)': empty answer"):
        math_text.convert(_write(tmp_path, "jsonl"), source="s", split="t", on_empty="fail", **KEYS)


def test_wrong_keys_named(tmp_path):
    path = _write(tmp_path, "jsonl")
    with pytest.raises(DataFormatError, match=r"set\.jsonl: field 'problem': missing; the rows have fields"):
        math_text.convert(path, source="s", split="t")
    out = tmp_path / "out"
    assert main(["math", str(path), "--out-dir", str(out)]) == 2 and not out.exists()


def test_shipped_math_sets_convert(data_root, tmp_path):
    files = sorted((data_root / "math").glob("*.jsonl"))
    assert len(files) == 6  # five evaluation suites and the training set
    out = tmp_path / "math"
    assert main(["math", *map(str, files), "--out-dir", str(out)]) == 0
    for f in files:
        raw = [json.loads(line) for line in f.read_text(encoding="utf-8").split("\n") if line.strip()]
        usable = [r for r in raw if str(r["answer"]).strip() and r["answer"] != []]
        recs = read_records(out / f"{f.stem}.parquet")
        assert len(recs) == len(usable), f.name
        assert [r.problem for r in recs] == [r["problem"] for r in usable]
        assert all(isinstance(r.answer, list) == isinstance(u["answer"], list) for r, u in zip(recs, usable))
        assert {r.split for r in recs} == {"train" if "train" in f.stem else "test"}
