"""MathVision (Wang et al. 2024) jsonl into canonical records.

Input: a jsonl with ``id``, ``question`` (with ``<image1>``, ``<image2>`` ... tags), ``options``
(choice texts, empty for free-form), ``answer`` (a letter for multiple choice, else a value),
``image`` (a path relative to the jsonl's folder), and ``subject`` / ``level`` / ``solution``.

Record decisions:

* ``id`` ``mathvision-<id>``; ``split`` is the file's stem (``testmini``).
* One picture per problem: MathVision composes every figure a question mentions into the single
  ``image`` file, so the question's first ``<imageN>`` tag becomes the record's one ``<image>``
  placeholder and later tags are removed (they point into the same picture). A question without
  tags gets the placeholder in front. The untouched question is kept in
  ``metadata["question_raw"]``.
* ``answer`` stays as published: a letter for multiple choice. Many options are only the bare
  letters "A".."E" (the choices are drawn in the image), so the letter is the one answer form
  that always exists. ``choices`` holds the options; ``metadata["answer_value"]`` holds the
  option text of the right letter when the options are more than bare letters.
* ``images``: the image file's bytes exactly, so a record round-trips byte for byte.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from data_prep.common import DataFormatError, check_image, console, print_table, progress
from mm_gmpo.data.loaders import default_data_dir
from mm_gmpo.data.record_io import write_records
from mm_gmpo.data.records import Record

SOURCE = "mathvision"
REQUIRED = ("id", "question", "options", "answer", "image")
_TAG = re.compile(r"<image\d*>")


def place_image_tags(question: str) -> str:
    """First ``<imageN>`` tag -> ``<image>``; the rest dropped; none -> ``<image>`` in front."""
    tags = list(_TAG.finditer(question))
    if not tags:
        return "<image>\n" + question.strip()
    first = tags[0]
    text = question[: first.start()] + "\x00" + _TAG.sub("", question[first.end() :])
    text = re.sub(r"[ \t]{2,}", " ", text).strip()
    return text.replace("\x00", "<image>")


def _record(row: dict[str, Any], file: Path, line: int, split: str, check_images: bool) -> Record:
    where = f"line {line}"
    for key in REQUIRED:
        if key not in row:
            raise DataFormatError(file, f"{key} ({where})", "missing")
    question, options, answer = row["question"], row["options"], row["answer"]
    if not isinstance(question, str) or not question.strip():
        raise DataFormatError(file, f"question ({where})", "not a non-empty string")
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise DataFormatError(file, f"options ({where})", f"expected a list of strings, got {options!r}")
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise DataFormatError(file, f"answer ({where})", f"expected a non-empty string, got {answer!r}")
    answer = answer.strip()
    meta: dict[str, Any] = {k: v for k, v in row.items() if k not in REQUIRED}
    meta["question_raw"] = question
    meta["image_file"] = row["image"]
    if options:
        letters = [chr(ord("A") + i) for i in range(len(options))]
        if answer not in letters:
            raise DataFormatError(
                file, f"answer ({where})", f"expected a letter in {letters}, got {answer!r}"
            )
        if options != letters:
            meta["answer_value"] = options[letters.index(answer)]
    image_path = file.parent / str(row["image"])
    if not image_path.is_file():
        raise DataFormatError(file, f"image ({where})", f"image file {image_path} not found")
    image = image_path.read_bytes()
    if check_images:
        check_image(image, image_path, f"image ({where})")
    return Record(
        id=f"{SOURCE}-{row['id']}",
        problem=place_image_tags(question),
        answer=answer,
        choices=list(options) if options else None,
        images=[image],
        source=SOURCE,
        split=split,
        metadata=meta,
    )


def convert(src: Path, check_images: bool = True) -> list[Record]:
    """Read a MathVision jsonl (or a folder holding ``testmini.jsonl``)."""
    file = src / "testmini.jsonl" if src.is_dir() else src
    if not file.is_file():
        raise DataFormatError(file, "jsonl", "file not found")
    lines = file.read_text(encoding="utf-8").split("\n")  # not splitlines(): see math_text
    records, seen = [], set()
    for n, line in progress(enumerate(lines, 1), len(lines), f"mathvision {file.name}"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(file, f"line {n}", f"not valid JSON ({e})") from e
        rec = _record(row, file, n, file.stem, check_images)
        if rec.id in seen:
            raise DataFormatError(file, f"id (line {n})", f"duplicate id {row['id']!r}")
        seen.add(rec.id)
        records.append(rec)
    return records


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mathvision",
        help="MathVision jsonl + images -> one record parquet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "src",
        type=Path,
        nargs="?",
        default=None,
        help="jsonl file or folder with testmini.jsonl (default: <data folder>/mathvision)",
    )
    p.add_argument("--out", type=Path, required=True, help="output parquet file")
    p.add_argument("--no-check-images", action="store_true", help="skip decoding every image")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    src = args.src if args.src is not None else default_data_dir() / "mathvision"
    records = convert(src, check_images=not args.no_check_images)
    write_records(args.out, records)
    mc = sum(r.choices is not None for r in records)
    subjects = len({r.metadata.get("subject") for r in records})
    rows = [("records", len(records)), ("multiple choice", mc), ("free-form", len(records) - mc)]
    rows.append(("subjects", subjects))
    print_table("mathvision", ("", "count"), rows)
    console.print(f"wrote {args.out}")
    return 0
