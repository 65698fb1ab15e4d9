"""The VL demo's synthetic image task: count the dots drawn in a picture.

Why this task: the answer is in the image only (the question text is the same for every
record), so a model that gains accuracy has learned to look; a tiny random Qwen2.5-VL can
learn it on a CPU in minutes, because the count is carried by how much of the picture is
covered, which even a two-layer vision tower can pick up; and a rule-based verifier judges
it exactly. Pictures come in several sizes and aspect ratios, so every batch exercises the
image-aware collation (different patch counts per sample).

Each problem is a pair (count, layout): ``layout`` seeds where the dots go, their colour and
the canvas size, so the same pair always draws the same PNG. Train and test are disjoint by
a fixed rule on the pair, so held-out accuracy never counts memorised pictures.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw

from mm_gmpo.data.records import Record

SPLITS = ("train", "test")
SOURCE = "synthetic_dots"
QUESTION = "How many dots are in the picture?"
MIN_COUNT, MAX_COUNT = 1, 5
N_LAYOUTS = 2000
# (width, height): several aspect ratios; the processor scales them to its pixel budget.
CANVASES = ((112, 112), (140, 84), (84, 140), (168, 112), (96, 96))
COLOURS = ((200, 30, 30), (30, 120, 200), (20, 150, 60), (40, 40, 40))


def split_of(count: int, layout: int) -> str:
    """One in five pictures is held out; the rule is arbitrary but fixed."""
    return "test" if (7 * layout + 3 * count) % 5 == 0 else "train"


def dot_problems(split: str, min_count: int = MIN_COUNT, max_count: int = MAX_COUNT) -> list[tuple[int, int]]:
    """Every (count, layout) of the split, in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {SPLITS}")
    if not 1 <= min_count <= max_count <= 9:
        raise ValueError(f"need 1 <= min_count <= max_count <= 9, got {min_count}..{max_count}")
    return [
        (count, layout)
        for count in range(min_count, max_count + 1)
        for layout in range(N_LAYOUTS)
        if split_of(count, layout) == split
    ]


def draw_dots(count: int, layout: int) -> Image.Image:
    """``count`` filled, non-overlapping discs on a white canvas, placed by ``layout``.

    Discs sit in distinct cells of a 3x3 grid (jittered inside the cell), so they never touch
    and the count is unambiguous at any resize.
    """
    if not 0 <= count <= 9:
        raise ValueError(f"count must be in 0..9, got {count}")
    rng = random.Random(f"{SOURCE}:layout:{layout}")
    width, height = CANVASES[rng.randrange(len(CANVASES))]
    colour = COLOURS[rng.randrange(len(COLOURS))]
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    cell_w, cell_h = width / 3, height / 3
    radius = 0.3 * min(cell_w, cell_h)
    for cell in rng.sample(range(9), count):
        cx = (cell % 3 + 0.5) * cell_w + rng.uniform(-0.15, 0.15) * cell_w
        cy = (cell // 3 + 0.5) * cell_h + rng.uniform(-0.15, 0.15) * cell_h
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    return img


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_dot_records(
    n: int, seed: int = 0, split: str = "train", min_count: int = MIN_COUNT, max_count: int = MAX_COUNT
) -> list[Record]:
    """``n`` distinct pictures with the question "How many dots are in the picture?".

    Records carry the PNG bytes (no files), the answer as a digit string, and the pair in
    ``metadata``; the same arguments give the same records.
    """
    pool = dot_problems(split, min_count, max_count)
    if not 0 <= n <= len(pool):
        raise ValueError(f"n={n} but the {split!r} split has {len(pool)} distinct pictures")
    rng = random.Random(f"{SOURCE}:{seed}:{split}")
    records = []
    for i, (count, layout) in enumerate(rng.sample(pool, n)):
        records.append(
            Record(
                id=f"dots-{split}-{seed}-{i}",
                problem=QUESTION,
                answer=str(count),
                images=[png_bytes(draw_dots(count, layout))],
                source=SOURCE,
                split=split,
                metadata={"count": count, "layout": layout},
            )
        )
    return records
