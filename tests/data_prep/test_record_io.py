"""Record parquet files: exact round trip, readable by `datasets`, all-or-nothing writes."""

from __future__ import annotations

import pytest

from mm_gmpo.data.record_io import RecordFormatError, read_records, write_record_sets, write_records
from mm_gmpo.data.records import Record


def _records(images) -> list[Record]:
    return [
        Record(
            id="a-0",
            problem="<image>Find x.",
            answer="6",
            choices=["3", "6", "9", "12"],
            images=[images.png((40, 30))],
            source="geo",
            split="train",
            metadata={"answer_letter": "B", "nested": {"k": [1, 2.5, None]}, "text": "ünïcode"},
        ),
        Record(id="a-1", problem="Sum?", answer=["1/2", "0.5"], source="minerva", split="test"),
        Record(id="a-2", problem="One form only", answer=["7"]),  # a one-element *list*
        Record(id="a-3", problem="Plain", answer="7", choices=[]),  # empty choices, not None
    ]


def test_round_trip_is_exact(tmp_path, images):
    recs = _records(images)
    path = write_records(tmp_path / "out.parquet", recs)
    back = read_records(path)
    assert back == recs
    assert isinstance(back[2].answer, list) and isinstance(back[3].answer, str)
    assert back[1].choices is None and back[3].choices == []


def test_image_paths_are_embedded(tmp_path, images):
    img = tmp_path / "pic.png"
    img.write_bytes(images.png())
    write_records(
        tmp_path / "out.parquet", [Record(id="x", problem="<image>", answer="1", images=[str(img)])]
    )
    img.unlink()  # the dataset must not depend on the original file any more
    assert read_records(tmp_path / "out.parquet")[0].images == [images.png()]


def test_readable_by_datasets(tmp_path, images):
    import datasets

    path = write_records(tmp_path / "train.parquet", _records(images))
    ds = datasets.load_dataset("parquet", data_files={"train": str(path)}, cache_dir=str(tmp_path / "cache"))
    train = ds["train"]
    assert train.num_rows == 4
    assert train[0]["images"][0].size == (40, 30)  # decoded to a PIL image via the Image feature
    assert train[1]["answer"] == ["1/2", "0.5"] and train[1]["answer_is_list"]
    assert train[0]["choices"] == ["3", "6", "9", "12"]


def test_failed_write_leaves_nothing_behind(tmp_path, images):
    existing = tmp_path / "train.parquet"
    write_records(existing, _records(images)[:1])
    before = existing.read_bytes()

    def broken():
        yield _records(images)[1]
        raise RuntimeError("converter crashed mid-way")

    with pytest.raises(RuntimeError):
        write_record_sets({tmp_path / "test.parquet": _records(images), existing: broken()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.parquet"]  # no test.parquet, no temp files
    assert existing.read_bytes() == before


def test_foreign_parquet_rejected_with_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}), path)
    with pytest.raises(RecordFormatError, match=r"foreign\.parquet.*missing column.*'problem'"):
        read_records(path)
