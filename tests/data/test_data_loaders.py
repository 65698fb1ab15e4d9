"""Loaders: every format, configurable keys, the bad-record switch, the shipped MATH500 file."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mm_gmpo.data import BadRecordError, Record, default_data_dir, load_records, load_records_with_report
from mm_gmpo.data.loaders import resolve_data_source, split_hf_source
from mm_gmpo.data.record_io import write_records

ROWS = [
    {"problem": "What is 1 + 1?", "answer": 2, "level": 3},
    {"problem": "Name the primes below 4.", "answer": ["2, 3", "3, 2"], "level": 4},
    {"problem": "Half of 3?", "answer": 1.5, "level": 1},
]


def _png(w: int = 32, h: int = 32, color: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _check_rows(records: list[Record], source: str) -> None:
    assert [r.problem for r in records] == [row["problem"] for row in ROWS]
    assert records[0].answer == "2" and records[2].answer == "1.5"  # numbers -> strings
    assert records[1].answer == ["2, 3", "3, 2"]  # lists stay lists
    assert [r.metadata["level"] for r in records] == [3, 4, 1]  # unmapped fields kept
    assert [r.id for r in records] == [f"{source}-{i}" for i in range(3)]
    assert all(r.source == source for r in records)


def test_jsonl_defaults(tmp_path: Path) -> None:
    records = load_records(_write_jsonl(tmp_path / "toy.jsonl", ROWS))
    _check_rows(records, "toy")
    assert all(r.choices is None and r.images == [] and r.split == "" for r in records)


def test_json_array_and_split_argument(tmp_path: Path) -> None:
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(ROWS), encoding="utf-8")
    records = load_records(path, split="test", source="mine")
    assert [r.id for r in records] == ["mine-0", "mine-1", "mine-2"]
    assert all(r.split == "test" and r.source == "mine" for r in records)


def test_parquet_plain_table(tmp_path: Path) -> None:
    path = tmp_path / "toy.parquet"
    rows = [
        {**r, "answer": json.dumps(r["answer"]) if isinstance(r["answer"], list) else str(r["answer"])}
        for r in ROWS
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    records = load_records(path)
    assert [r.answer for r in records] == [row["answer"] for row in rows]
    assert [r.id for r in records] == ["toy-0", "toy-1", "toy-2"]


def test_parquet_record_format_round_trip(tmp_path: Path) -> None:
    original = [
        Record(
            id="a",
            problem="<image> Find x.",
            answer="6",
            choices=["6", "7"],
            images=[_png()],
            source="g3k",
            split="train",
            metadata={"k": 1},
        ),
        Record(id="b", problem="Find y.", answer=["6"], source="g3k", split="train"),
    ]
    path = write_records(tmp_path / "train.parquet", original)
    loaded = load_records(path)
    assert loaded == original  # str vs one-element list, image bytes and metadata all survive


def test_save_to_disk_round_trip_with_images(tmp_path: Path) -> None:
    img_a, img_b = _png(color=(1, 2, 3)), _png(color=(9, 8, 7))
    ds = datasets.Dataset.from_dict(
        {
            "question": ["Find x.", "Find the area."],
            "solution": [12, "4\\sqrt{3}"],
            "options": [["12", "13"], []],
            "images": [[Image.open(io.BytesIO(img_a))], [Image.open(io.BytesIO(img_b))]],
            "uid": [101, 102],
        },
        features=datasets.Features(
            {
                "question": datasets.Value("string"),
                "solution": datasets.Value("string"),
                "options": datasets.List(datasets.Value("string")),
                "images": datasets.List(datasets.Image()),
                "uid": datasets.Value("int64"),
            }
        ),
    )
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "g3k"))
    kwargs = {"question_key": "question", "answer_key": "solution", "choices_key": "options", "id_key": "uid"}
    records = load_records(tmp_path / "g3k", hf_split="train", **kwargs)
    assert [r.id for r in records] == ["101", "102"]
    assert [r.answer for r in records] == ["12", "4\\sqrt{3}"]
    assert records[0].choices == ["12", "13"] and records[1].choices is None  # empty options = free-form
    assert all(len(r.images) == 1 and isinstance(r.images[0], bytes) for r in records)
    decoded = [Image.open(io.BytesIO(r.images[0])).convert("RGB").getpixel((0, 0)) for r in records]
    assert decoded == [(1, 2, 3), (9, 8, 7)]
    assert records[0].metadata == {}  # every column was mapped
    assert len(load_records(tmp_path / "g3k", hf_split="test", **kwargs)) == 1
    with pytest.raises(ValueError, match="hf_split"):
        load_records(tmp_path / "g3k", **kwargs)
    # A single Dataset directory and a bare .arrow file load too.
    ds.save_to_disk(str(tmp_path / "single"))
    assert len(load_records(tmp_path / "single", **kwargs)) == 2
    arrow_file = next((tmp_path / "single").glob("*.arrow"))
    assert [r.id for r in load_records(arrow_file, **kwargs)] == ["101", "102"]


def test_custom_and_dotted_keys_and_relative_image_paths(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "q.png").write_bytes(_png())
    rows = [
        {
            "prompt": "Which is larger?",
            "reward_model": {"ground_truth": "B"},
            "opts": ["3", "4"],
            "picture": "imgs/q.png",
            "key": "x-1",
        }
    ]
    records = load_records(
        _write_jsonl(tmp_path / "mc.jsonl", rows),
        question_key="prompt",
        answer_key="reward_model.ground_truth",
        choices_key="opts",
        images_key="picture",
        id_key="key",
    )
    (rec,) = records
    assert (rec.id, rec.problem, rec.answer, rec.choices) == ("x-1", "Which is larger?", "B", ["3", "4"])
    assert rec.images == [str(tmp_path / "imgs" / "q.png")]
    assert "reward_model" not in rec.metadata and "picture" not in rec.metadata


BAD_ROWS = [
    {"problem": "ok", "answer": "1"},
    {"problem": "no answer here"},
    {"problem": "   ", "answer": "3"},
    {"problem": "empty answer", "answer": ""},
    {"problem": "ok too", "answer": 5},
]


def test_bad_record_error_names_file_row_and_field(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", BAD_ROWS)
    with pytest.raises(BadRecordError) as err:
        load_records(path)
    msg = str(err.value)
    assert str(path) in msg and "row 1" in msg and "'answer'" in msg
    path2 = _write_jsonl(tmp_path / "bad2.jsonl", [BAD_ROWS[0], BAD_ROWS[2]])
    with pytest.raises(BadRecordError, match=r"row 1: empty problem \(field 'problem'"):
        load_records(path2)


def test_bad_record_skip_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", BAD_ROWS)
    with caplog.at_level(logging.WARNING, logger="mm_gmpo.data.loaders"):
        result = load_records_with_report(path, on_bad_record="skip")
    assert [r.problem for r in result.records] == ["ok", "ok too"]
    assert [r.id for r in result.records] == ["bad-0", "bad-4"]  # ids keep the row index
    assert result.n_rows == 5 and result.n_skipped == 3
    assert result.skipped == {
        "missing answer key 'answer'": 1,
        "empty problem": 1,
        "empty or unusable answer": 1,
    }
    assert "skipped 3 of 5 rows" in caplog.text
    with pytest.raises(ValueError, match="on_bad_record"):
        load_records(path, on_bad_record="drop")  # type: ignore[arg-type]


def test_hf_dataset_id_goes_to_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"problem": ["p"], "answer": ["a"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # the hub is off: datasets reads its cache
    records = load_records("someone/math-set", hf_split="test", hf_config="default")
    assert calls == [("someone/math-set", "default", "test")]
    assert records[0].source == "math-set" and records[0].id == "math-set-0"  # dataset name, no owner


def test_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "nope.jsonl")
    (tmp_path / "data.csv").write_text("problem,answer\n")
    with pytest.raises(ValueError, match="format"):
        load_records(tmp_path / "data.csv")


def test_data_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MM_GMPO_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("MM_GMPO_DATA_DIR")
    # Unset: the repository's data/, reached through the package (mm_gmpo/_data links to it).
    repo_data = Path(__file__).resolve().parents[2] / "data"
    assert default_data_dir() == repo_data.resolve()
    assert (repo_data / "math" / "math500.jsonl").is_file()


def test_math500_from_the_shipped_data(data_root: Path) -> None:
    records = load_records(data_root / "math" / "math500.jsonl")
    assert len(records) == 500
    assert len({r.id for r in records}) == 500
    assert all(r.problem.strip() and isinstance(r.answer, str) and r.answer for r in records)


def test_relative_paths_fall_back_to_the_data_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A config's ``math/x.jsonl`` is read from the working directory when it is there, else
    from the data folder, so the same config runs from any directory."""
    data, work = tmp_path / "data", tmp_path / "work"
    (data / "math").mkdir(parents=True)
    (work / "math").mkdir(parents=True)
    (data / "math" / "x.jsonl").write_text('{"problem": "from data", "answer": "1"}\n')
    monkeypatch.setenv("MM_GMPO_DATA_DIR", str(data))
    monkeypatch.chdir(work)
    assert resolve_data_source("math/x.jsonl") == data / "math" / "x.jsonl"
    assert [r.problem for r in load_records("math/x.jsonl")] == ["from data"]
    (work / "math" / "x.jsonl").write_text('{"problem": "from here", "answer": "1"}\n')
    assert [r.problem for r in load_records("math/x.jsonl")] == ["from here"]
    # Explicitly relative or absolute paths never move.
    (work / "math" / "x.jsonl").unlink()
    assert resolve_data_source("./math/x.jsonl") == "./math/x.jsonl"
    with pytest.raises(FileNotFoundError, match="then in the data folder"):
        load_records("./math/x.jsonl")


def test_file_names_are_never_hub_ids_and_ids_take_a_split(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import datasets

    monkeypatch.setenv("MM_GMPO_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    asked = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        asked.append((path, split))
        rows = {"problem": ["p"], "answer": ["a"]}
        if split is None:
            return datasets.DatasetDict({s: datasets.Dataset.from_dict(rows) for s in ("test", "train")})
        return datasets.Dataset.from_dict(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # the fake stands for datasets' own cache
    # "geometry3k/train.parquet" (not converted yet) is a missing file, not a dataset to download.
    with pytest.raises(FileNotFoundError, match="geometry3k/train.parquet"):
        load_records("geometry3k/train.parquet")
    assert asked == []
    assert split_hf_source("owner/name@train") == ("owner/name", "train")
    assert split_hf_source("math/x.jsonl@train") == ("math/x.jsonl@train", None)
    assert [r.id for r in load_records("owner/name@train")] == ["name-0"]
    assert asked == [("owner/name", "train")]
    with pytest.raises(ValueError, match=r"owner/name@test"):  # the error says how to choose
        load_records("owner/name")
