"""The image validation pass over record files.

Every image of every record is fully decoded with :func:`mm_gmpo.data.images.load_image_rgb`,
the same function the VL training path uses, so whatever passes here loads in training.
A record with any unusable image (missing, empty, unreadable, too small, too large, absurd
aspect ratio) is dropped and counted by reason, or, with ``--on-bad fail``, stops the pass
with an error naming the file, the record and the image. Images that are not plain RGB, carry
an EXIF rotation, or exceed ``--max-pixels`` are converted and re-encoded as PNG; images that
are already fine keep their original bytes (a JPEG stays the same JPEG).
"""

from __future__ import annotations

import argparse
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from data_prep.common import DataFormatError, console, print_table, progress
from mm_gmpo.data.images import (
    DEFAULT_MAX_ASPECT,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MIN_SIDE,
    ImageError,
    encode_png,
    load_image_rgb,
    pillow_pixel_limit,
)
from mm_gmpo.data.record_io import read_records, write_record_sets
from mm_gmpo.data.records import Record

# Longest-side buckets of the size histogram (upper bounds, exclusive).
SIZE_BUCKETS = ((256, "<256"), (512, "256-511"), (1024, "512-1023"), (2048, "1024-2047"))
BUCKET_NAMES = tuple(name for _, name in SIZE_BUCKETS) + (">=2048",)
_EXIF_ORIENTATION = 0x0112


def size_bucket(width: int, height: int) -> str:
    side = max(width, height)
    for bound, name in SIZE_BUCKETS:
        if side < bound:
            return name
    return ">=2048"


@dataclass
class Summary:
    """What the pass did; printed as a table and returned for tests and callers."""

    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    converted_from: Counter[str] = field(default_factory=Counter)  # original mode -> images
    resized: int = 0
    sizes: Counter[str] = field(default_factory=Counter)  # bucket -> kept images

    def merge(self, other: Summary) -> None:
        self.kept += other.kept
        self.resized += other.resized
        for name in ("dropped", "converted_from", "sizes"):
            getattr(self, name).update(getattr(other, name))

    def print(self, title: str) -> None:
        rows: list[tuple[str, object]] = [("kept records", self.kept)]
        rows += [(f"dropped: {reason}", n) for reason, n in sorted(self.dropped.items())]
        rows += [(f"converted from {mode}", n) for mode, n in sorted(self.converted_from.items())]
        rows.append(("resized to budget", self.resized))
        rows += [(f"longest side {name}", self.sizes[name]) for name in BUCKET_NAMES]
        print_table(title, ("", "count"), rows)


@dataclass
class Limits:
    max_pixels: int | None = None
    min_side: int = DEFAULT_MIN_SIDE
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    max_aspect: float | None = DEFAULT_MAX_ASPECT


def _original(data: bytes, max_image_pixels: int | None) -> tuple[str, tuple[int, int], bool]:
    """Mode, size and whether an EXIF rotation applies, from the header (no decode)."""
    with pillow_pixel_limit(max_image_pixels), Image.open(io.BytesIO(data)) as img:
        rotated = img.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None)
        return img.mode, img.size, rotated


def check_record(rec: Record, limits: Limits, summary: Summary) -> Record:
    """The record with every image decoded, converted where needed; raises :class:`ImageError`.

    ``summary`` is only updated when the whole record passes.
    """
    mine = Summary()
    images: list[bytes | str] = []
    for ref in rec.images:
        # A path that does not exist is passed on as is, so load_image_rgb reports "missing".
        data = Path(ref).read_bytes() if isinstance(ref, str) and Path(ref).is_file() else ref
        img = load_image_rgb(
            data,
            limits.max_pixels,
            min_side=limits.min_side,
            max_image_pixels=limits.max_image_pixels,
            max_aspect=limits.max_aspect,
        )
        mode, (width, height), rotated = _original(
            data, limits.max_image_pixels
        )  # decoded fine, so the header is sane
        resized = img.width * img.height < width * height  # only the budget ever shrinks it
        if mode != "RGB" or rotated or resized:
            images.append(encode_png(img))
            if mode != "RGB":
                mine.converted_from[mode] += 1
            mine.resized += resized
        else:
            images.append(data)
        mine.sizes[size_bucket(*img.size)] += 1
    summary.merge(mine)
    return replace(rec, images=images)


def validate(
    records: Iterable[Record],
    limits: Limits,
    *,
    on_bad: str = "drop",
    file: str | Path = "",
    total: int | None = None,
) -> tuple[list[Record], Summary]:
    """Check every record; bad ones are dropped (``on_bad="drop"``) or raise (``"fail"``)."""
    summary, kept = Summary(), []
    for rec in progress(records, total, f"images {Path(file).name}"):
        try:
            kept.append(check_record(rec, limits, summary))
        except ImageError as e:
            if on_bad == "fail":
                raise DataFormatError(
                    file, f"images (record {rec.id})", f"image {e.reason}: {e.detail}"
                ) from e
            summary.dropped[e.reason] += 1
    summary.kept = len(kept)
    return kept, summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate-images",
        help="decode every image of record files; drop or fail on bad ones; convert to RGB",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", type=Path, nargs="+", help="record parquet files")
    p.add_argument(
        "--out-dir",
        type=Path,
        required=True,
        help="validated files keep their names here (may be the input's)",
    )
    p.add_argument("--on-bad", choices=("drop", "fail"), default="drop")
    p.add_argument("--max-pixels", type=int, default=None, help="downsize larger images to this pixel budget")
    p.add_argument("--min-side", type=int, default=DEFAULT_MIN_SIDE, help="shortest side allowed (px)")
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="refuse larger images (also Pillow's decompression-bomb limit, so it may exceed Pillow's "
        "default 89.5 MP)",
    )
    p.add_argument(
        "--max-aspect", type=float, default=DEFAULT_MAX_ASPECT, help="refuse longer/shorter ratios"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    limits = Limits(args.max_pixels, args.min_side, args.max_image_pixels, args.max_aspect)
    total, outputs = Summary(), {}
    for path in args.inputs:
        records = read_records(path)
        kept, summary = validate(records, limits, on_bad=args.on_bad, file=path, total=len(records))
        outputs[args.out_dir / path.name] = kept
        total.merge(summary)
    write_record_sets(outputs)
    total.print("validate-images")
    console.print(f"wrote {len(outputs)} file(s) to {args.out_dir}")
    return 0
