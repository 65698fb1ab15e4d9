"""Every data_prep subcommand reports bad input as the converters do: one line, exit status 2."""

from __future__ import annotations

import pytest
from PIL import Image

from data_prep.__main__ import main
from mm_gmpo.data.images import ImageError, load_image_rgb
from mm_gmpo.data.record_io import read_records, write_records
from mm_gmpo.data.records import Record


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [" ".join(line.split()) for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("command", [["stats"], ["validate-images", "--out-dir", "OUT"]])
def test_missing_or_non_parquet_input(command, tmp_path, capsys):
    argv = [c.replace("OUT", str(tmp_path / "out")) for c in command]
    missing = tmp_path / "nope.parquet"
    assert main([*argv, str(missing)]) == 2
    assert _error_line(capsys) == f"error: {missing}: no such file"
    text = tmp_path / "notes.parquet"
    text.write_text("not parquet at all")
    assert main([*argv, str(text)]) == 2
    assert _error_line(capsys).startswith(f"error: {text}: not a parquet file (")


def test_stats_with_a_missing_tokenizer(tmp_path, capsys):
    data = write_records(tmp_path / "t.parquet", [Record(id="0", problem="1+1?", answer="2")])
    assert main(["stats", str(data), "--tokenizer", str(tmp_path / "no_tokenizer")]) == 2
    assert "field '--tokenizer': no such tokenizer folder" in _error_line(capsys)


def test_max_image_pixels_sets_pillows_guard_too(images, tmp_path, monkeypatch, capsys):
    """The limit given is the limit applied, above Pillow's own decompression-bomb guard too
    (here made 1,000 pixels so a 60x60 picture stands for a 100-megapixel scan)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    picture = images.png((60, 60))  # 3,600 pixels
    assert load_image_rgb(picture, max_image_pixels=5000).size == (60, 60)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored afterwards
    with pytest.raises(ImageError) as info:  # no limit given: Pillow's guard still protects
        load_image_rgb(picture, max_image_pixels=None)
    assert info.value.reason == "too_large"

    src = write_records(
        tmp_path / "in" / "d.parquet", [Record(id="a", problem="<image>Q", answer="1", images=[picture])]
    )
    out = tmp_path / "out"
    assert main(["validate-images", str(src), "--out-dir", str(out), "--max-image-pixels", "5000"]) == 0
    assert [r.id for r in read_records(out / "d.parquet")] == ["a"]
    assert main(["validate-images", str(src), "--out-dir", str(out), "--max-image-pixels", "3000"]) == 0
    assert read_records(out / "d.parquet") == []
    assert "dropped: too_large" in capsys.readouterr().err


def test_unreadable_image_message_names_the_bytes_not_a_python_object():
    with pytest.raises(ImageError) as info:
        load_image_rgb(b"this is not an image at all")
    assert str(info.value) == "unreadable: <27 bytes in memory> (not an image format Pillow can read)"
