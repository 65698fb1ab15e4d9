"""The VL demo's synthetic image task: count the squares drawn in a picture.

Why this task: the answer is in the image only (the question text is the same for every
record), so a model that gains accuracy has learned to look, and a rule-based verifier
judges it exactly. Pictures come in several sizes and aspect ratios, so every batch exercises
the image-aware collation (different patch and token counts per sample).

Why squares on a 28-pixel grid: one Qwen2.5-VL image token covers 28x28 pixels (14-px
patches merged 2x2), so each token sees either one square or background and the count is
"how many tokens look filled", which a tiny random model learns in a few hundred CPU steps.
Dots at free positions (a count spread over partial patches) stayed at chance after 300
supervised steps of the same tiny model, which would make a demo that shows nothing.

Each picture is a (grid, colour, filled cells) key drawn from a seeded layout number, so the
same arguments always give the same PNGs. Train and test are disjoint by a hash of that key,
so held-out accuracy never counts memorised pictures.
"""

from __future__ import annotations

import hashlib
import io
import random

from PIL import Image, ImageDraw

from mm_gmpo.data.records import Record

SPLITS = ("train", "test")
SOURCE = "synthetic_squares"
QUESTION = "How many squares are in the picture?"
MIN_COUNT, MAX_COUNT = 1, 5
N_LAYOUTS = 2000
CELL = 28  # pixels per image token of Qwen2.5-VL (patch 14, merge 2)
# (columns, rows) of cells: 6..16 tokens, within the tiny model's 4..16-token budget.
GRIDS = ((4, 4), (5, 3), (3, 5), (4, 3), (3, 4), (2, 4), (4, 2), (3, 3), (2, 3))
COLOURS = ((200, 30, 30), (30, 120, 200), (20, 150, 60), (40, 40, 40))


Picture = tuple[int, int, int, tuple[int, ...]]  # (columns, rows, colour index, filled cells)


def picture_of(count: int, layout: int) -> Picture:
    """What (count, layout) draws, as a canonical key: equal keys are identical PNGs."""
    rng = random.Random(f"{SOURCE}:layout:{layout}")
    cols, rows = GRIDS[rng.randrange(len(GRIDS))]
    colour = rng.randrange(len(COLOURS))
    if not 0 <= count <= cols * rows:
        raise ValueError(f"count must be in 0..{cols * rows} for a {cols}x{rows} grid, got {count}")
    return cols, rows, colour, tuple(sorted(rng.sample(range(cols * rows), count)))


def split_of(picture: Picture) -> str:
    """One in five distinct pictures is held out, by a hash of the picture itself.

    Hashing the drawn content (not the layout number) keeps the splits disjoint even where
    two layouts happen to draw the same picture.
    """
    digest = hashlib.sha256(repr(picture).encode()).digest()
    return "test" if digest[0] % 5 == 0 else "train"


def square_problems(split: str, min_count: int = MIN_COUNT, max_count: int = MAX_COUNT) -> list[Picture]:
    """Every distinct picture of the split, in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {SPLITS}")
    smallest = min(w * h for w, h in GRIDS)
    if not 1 <= min_count <= max_count <= smallest:
        raise ValueError(f"need 1 <= min_count <= max_count <= {smallest}, got {min_count}..{max_count}")
    seen: set[Picture] = set()
    out: list[Picture] = []
    for count in range(min_count, max_count + 1):
        for layout in range(N_LAYOUTS):
            pic = picture_of(count, layout)
            if pic not in seen and split_of(pic) == split:
                seen.add(pic)
                out.append(pic)
    return out


def draw_squares(picture: Picture) -> Image.Image:
    """Filled squares, each inside its own 28-px cell (4 px margin), on a white canvas."""
    cols, rows, colour, cells = picture
    img = Image.new("RGB", (cols * CELL, rows * CELL), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    margin = 4
    for cell in cells:
        x, y = (cell % cols) * CELL, (cell // cols) * CELL
        box = (x + margin, y + margin, x + CELL - 1 - margin, y + CELL - 1 - margin)
        draw.rectangle(box, fill=COLOURS[colour])
    return img


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_square_records(
    n: int, seed: int = 0, split: str = "train", min_count: int = MIN_COUNT, max_count: int = MAX_COUNT
) -> list[Record]:
    """``n`` distinct pictures with the question "How many squares are in the picture?".

    Counts are balanced (round-robin over the counts, each count's pictures shuffled) so
    guessing one number scores about 1 / number of counts, not the share of the most common
    count. Records carry the PNG bytes (no files), the answer as a digit string, and the
    picture in ``metadata``; the same arguments give the same records.
    """
    pool = square_problems(split, min_count, max_count)
    if not 0 <= n <= len(pool):
        raise ValueError(f"n={n} but the {split!r} split has {len(pool)} distinct pictures")
    rng = random.Random(f"{SOURCE}:{seed}:{split}")
    by_count: dict[int, list[Picture]] = {}
    for pic in pool:
        by_count.setdefault(len(pic[3]), []).append(pic)
    for pics in by_count.values():
        rng.shuffle(pics)
    order: list[Picture] = []
    for i in range(max(len(p) for p in by_count.values())):
        order.extend(pics[i] for _, pics in sorted(by_count.items()) if i < len(pics))
    chosen = order[:n]
    rng.shuffle(chosen)
    records = []
    for i, pic in enumerate(chosen):
        count = len(pic[3])
        records.append(
            Record(
                id=f"squares-{split}-{seed}-{i}",
                problem=QUESTION,
                answer=str(count),
                images=[png_bytes(draw_squares(pic))],
                source=SOURCE,
                split=split,
                metadata={"count": count, "grid": [pic[0], pic[1]], "cells": list(pic[3])},
            )
        )
    return records
