"""The synthetic square-counting task: deterministic, correct answers, disjoint balanced splits."""

from __future__ import annotations

import io
from collections import Counter

import pytest
from PIL import Image

from mm_gmpo.data.synthetic_vl import CELL, QUESTION, make_square_records, square_problems


def counted_squares(png: bytes) -> int:
    """Count the squares from the pixels alone: cells whose centre is not white."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    cols, rows = img.width // CELL, img.height // CELL
    assert (cols * CELL, rows * CELL) == img.size  # canvas on the 28-px token grid
    return sum(
        img.getpixel((c * CELL + CELL // 2, r * CELL + CELL // 2)) != (255, 255, 255)
        for r in range(rows)
        for c in range(cols)
    )


def test_answers_match_the_drawn_pictures() -> None:
    records = make_square_records(60, seed=1)
    for r in records:
        assert r.problem == QUESTION and len(r.images) == 1
        assert r.answer == str(counted_squares(r.images[0])) == str(r.metadata["count"])
    assert len({Image.open(io.BytesIO(r.images[0])).size for r in records}) > 3  # several sizes


def test_deterministic_distinct_and_balanced() -> None:
    a = make_square_records(100, seed=3)
    assert [r.images for r in a] == [r.images for r in make_square_records(100, seed=3)]
    assert [r.images for r in a] != [r.images for r in make_square_records(100, seed=4)]
    assert len({r.images[0] for r in a}) == 100
    counts = Counter(r.answer for r in make_square_records(200, seed=0, split="test"))
    assert set(counts.values()) == {40}  # 5 counts, 40 each


def test_splits_disjoint_by_picture() -> None:
    train, test = set(square_problems("train")), set(square_problems("test"))
    assert train and test and not train & test
    train_png = {r.images[0] for r in make_square_records(2000, seed=0)}
    assert not train_png & {r.images[0] for r in make_square_records(200, seed=0, split="test")}


def test_errors() -> None:
    with pytest.raises(ValueError, match="split"):
        make_square_records(3, split="validation")
    with pytest.raises(ValueError, match="distinct pictures"):
        make_square_records(10**6)
    with pytest.raises(ValueError, match="max_count"):
        make_square_records(3, max_count=9)
