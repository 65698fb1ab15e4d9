"""MathVision: the shipped testmini converts completely; images round-trip byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep import mathvision
from data_prep.__main__ import main
from data_prep.common import DataFormatError
from mm_gmpo.data.images import load_image_rgb
from mm_gmpo.data.record_io import read_records


def _raw_rows(data_dir: Path) -> list[dict]:
    lines = (data_dir / "mathvision" / "testmini.jsonl").read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def converted(tmp_path_factory, data_root) -> tuple[Path, list]:
    """The shipped testmini through the CLI (default source: the data folder's mathvision/)."""
    out = tmp_path_factory.mktemp("mv") / "mathvision.parquet"
    assert main(["mathvision", "--out", str(out)]) == 0
    return out, read_records(out)


def test_testmini_converts_completely(converted, data_root):
    _, records = converted
    raw = _raw_rows(data_root)
    assert len(records) == len(raw) == 304
    assert len({r.id for r in records}) == 304
    assert all(r.problem.count("<image>") == len(r.images) == 1 for r in records)
    assert all("<image1>" not in r.problem for r in records)
    assert sum(r.choices is not None for r in records) == sum(bool(r["options"]) for r in raw)
    for rec, row in zip(records, raw, strict=True):
        assert rec.id == f"mathvision-{row['id']}" and rec.answer == row["answer"].strip()
        assert rec.metadata["subject"] == row["subject"] and rec.metadata["level"] == row["level"]
        if row["options"]:
            assert rec.choices == row["options"]


def test_every_image_decodes_and_round_trips_byte_exactly(converted, data_root):
    _, records = converted
    for rec in records:
        original = (data_root / "mathvision" / rec.metadata["image_file"]).read_bytes()
        assert rec.images[0] == original
        assert load_image_rgb(rec.images[0]).mode == "RGB"


def _fixture_dir(tmp_path: Path, images, rows: list[dict]) -> Path:
    root = tmp_path / "mathvision"
    (root / "images").mkdir(parents=True)
    for row in rows:
        (root / row["image"]).write_bytes(images.png((50, 40)))
    (root / "testmini.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


ROWS = [
    {
        "id": "1",
        "question": "Angle? <image1>",
        "options": ["$10$", "$15$"],
        "answer": "B",
        "image": "images/1.png",
    },
    {
        "id": "2",
        "question": "Pick one.\n<image1>",
        "options": list("ABCDE"),
        "answer": "D",
        "image": "images/2.png",
    },
    {"id": "3", "question": "How many?", "options": [], "answer": "6", "image": "images/3.png", "level": 2},
]


def test_records_from_a_small_release(tmp_path, images):
    recs = mathvision.convert(_fixture_dir(tmp_path, images, ROWS))
    assert [r.answer for r in recs] == ["B", "D", "6"]
    assert recs[0].metadata["answer_value"] == "$15$"
    assert "answer_value" not in recs[1].metadata  # bare letters carry no value
    assert recs[2].choices is None and recs[2].problem == "<image>\nHow many?"
    assert recs[2].metadata["level"] == 2 and all(r.split == "testmini" for r in recs)


def test_data_dir_env_override(tmp_path, images, monkeypatch):
    _fixture_dir(tmp_path, images, ROWS)
    monkeypatch.setenv("MM_GMPO_DATA_DIR", str(tmp_path))
    out = tmp_path / "o.parquet"
    assert main(["mathvision", "--out", str(out)]) == 0
    assert [r.id for r in read_records(out)] == ["mathvision-1", "mathvision-2", "mathvision-3"]


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Q <image1>", "Q <image>"),
        ("ant <image1> from home <image2> to <image3>.\n<image6>", "ant <image> from home to ."),
        ("no tag here", "<image>\nno tag here"),
    ],
)
def test_place_image_tags(question, expected):
    assert mathvision.place_image_tags(question) == expected


def test_missing_field_and_image_named(tmp_path, images):
    root = _fixture_dir(tmp_path, images, ROWS)
    rows = [dict(r) for r in ROWS]
    del rows[1]["answer"]
    (root / "testmini.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataFormatError, match=r"testmini\.jsonl: field 'answer \(line 2\)': missing"):
        mathvision.convert(root)
    (root / "testmini.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    (root / "images" / "3.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataFormatError, match=r"3\.png: field 'image \(line 3\)': image unreadable"):
        mathvision.convert(root)
    out = tmp_path / "out.parquet"
    assert main(["mathvision", str(root), "--out", str(out)]) == 2 and not out.exists()
