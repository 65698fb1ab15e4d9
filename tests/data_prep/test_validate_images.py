"""The validation pass: drops (or fails on) bad images by reason, converts modes, keeps good bytes."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from data_prep.__main__ import main
from data_prep.common import DataFormatError
from data_prep.images import Limits, validate
from mm_gmpo.data.record_io import read_records, write_records
from mm_gmpo.data.records import Record


def _rec(rid: str, *imgs) -> Record:
    return Record(id=rid, problem="<image>" * len(imgs) + "Q", answer="1", images=list(imgs), source="t")


@pytest.fixture
def mixed(images, tmp_path) -> list[Record]:
    return [
        _rec("good-jpeg", images.noisy_jpeg()),
        _rec("palette", images.palette_transparent()),
        _rec("gray16", images.gray16()),
        _rec("cmyk", images.cmyk_jpeg()),
        _rec("big", images.png((600, 400))),
        _rec("text-only"),
        _rec("zero-byte", b""),
        _rec("truncated", images.truncated_jpeg()),
        _rec("tiny", images.png((1, 1))),
        _rec("huge", images.header_only_png(9000, 9000)),
        _rec("missing", str(tmp_path / "gone.png")),
        _rec("second-bad", images.png((800, 500)), images.png((5, 5))),
    ]


def test_drop_by_reason_and_convert(mixed):
    kept, summary = validate(mixed, Limits(max_pixels=100_000))
    assert [r.id for r in kept] == ["good-jpeg", "palette", "gray16", "cmyk", "big", "text-only"]
    assert summary.kept == 6
    assert summary.dropped == {"empty": 1, "unreadable": 1, "too_small": 2, "too_large": 1, "missing": 1}
    assert summary.converted_from == {"P": 1, "I;16": 1, "CMYK": 1}
    assert summary.resized == 1
    # Only kept records count: the dropped record's good (and resized) 800x500 image does not.
    assert summary.sizes == {"<256": 4, "256-511": 1}
    assert kept[0].images == mixed[0].images  # already-fine bytes untouched (still the JPEG)
    for rec in kept[1:5]:
        img = Image.open(io.BytesIO(rec.images[0]))
        assert img.format == "PNG" and img.mode == "RGB"
    w, h = Image.open(io.BytesIO(kept[4].images[0])).size
    assert w * h <= 100_000 and w > h


def test_fail_switch_names_the_record(mixed):
    with pytest.raises(
        DataFormatError, match=r"in\.parquet: field 'images \(record zero-byte\)': image empty"
    ):
        validate(mixed, Limits(), on_bad="fail", file="in.parquet")


def test_cli_writes_validated_file(mixed, tmp_path, capsys):
    # A stored file embeds bytes, so the "missing path" case cannot be in it.
    src = write_records(tmp_path / "in" / "train.parquet", [r for r in mixed if r.id != "missing"])
    out = tmp_path / "valid"
    assert main(["validate-images", str(src), "--out-dir", str(out), "--min-side", "1"]) == 0
    kept = read_records(out / "train.parquet")
    assert [r.id for r in kept] == [
        "good-jpeg",
        "palette",
        "gray16",
        "cmyk",
        "big",
        "text-only",
        "tiny",
        "second-bad",
    ]
    err = capsys.readouterr().err
    assert "dropped: too_large" in err and "converted from CMYK" in err

    assert main(["validate-images", str(src), "--out-dir", str(tmp_path / "v2"), "--on-bad", "fail"]) == 2
    assert not (tmp_path / "v2").exists()
