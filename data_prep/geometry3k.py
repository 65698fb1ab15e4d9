"""Geometry3K (Lu et al., Inter-GPS) from either published layout into canonical records.

Layouts
-------
``folders``: the original Inter-GPS release, ``{train,val,test}/<id>/data.json`` plus
``img_diagram.png``. data.json has ``id``, ``problem_text``, ``choices`` (4 strings), ``answer``
(a letter A-D), ``precise_value`` and often ``compact_text`` / ``compact_choices``. Ids 0-2100
are train, 2101-2400 validation, 2401-3001 test (2,101 / 300 / 601 problems).

``parquet``: the release used by EasyR1 and verl: ``train`` / ``validation`` / ``test`` parquet
files (``data/train-00000-of-00001.parquet`` or ``train.parquet``, in the folder or its
``data/`` subfolder) with columns ``images`` (list of ``{bytes, path}``), ``problem``
(``"<image>"`` followed by the problem text) and ``answer`` (the value of the right choice).
This is the hub dataset ``hiyouga/geometry3k``; :func:`read_hub` reads it by id (later
revisions add ``id``, ``choices`` and ``ground_truth`` columns, which are not read).

The canonical record (both layouts give the same one)
-----------------------------------------------------
* ``id``: ``geometry3k-<n>``. Layout 1 uses the problem's id (checked against its folder
  name); layout 2 has no id column, so ``n`` = row index within the split + the split's first
  id (0 / 2101 / 2401), which assumes the release kept the original order (it did: its row
  counts and the original id ranges coincide).
* ``problem``: one ``<image>`` placeholder followed by the problem text, whitespace collapsed
  to single spaces. Layout 2's placeholder is moved to the front if found elsewhere.
* ``answer``: the *value* text of the correct choice (layout 1: ``choices[letter]``; layout 2:
  ``answer``), whitespace collapsed. The value is what layout 2 carries, so it is the only
  answer form both can agree on; the letter is kept in ``metadata["answer_letter"]``.
* ``images``: the diagram's bytes exactly as stored (PNG file bytes / the parquet cell).
* ``source`` ``geometry3k``; ``split`` ``train`` / ``validation`` / ``test`` (``val`` renamed).

"Same record" therefore means equal ``id``, ``problem``, ``answer``, ``images``, ``source`` and
``split``. ``choices`` and the metadata (``answer_letter``, ``answer_precise_value``,
``compact_text``, ...) exist only where the input has them, i.e. from layout 1; layout 2
records have ``choices=None``. ``metadata["layout"]`` says which layout a record came from.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from data_prep.common import DataFormatError, check_image, console, print_table, progress
from mm_gmpo.data.record_io import write_record_sets
from mm_gmpo.data.records import Record

SOURCE = "geometry3k"
SPLITS = ("train", "validation", "test")
SPLIT_ID_START = {"train": 0, "validation": 2101, "test": 2401}
PUBLISHED_COUNTS = {"train": 2101, "validation": 300, "test": 601}
FOLDER_NAMES = {"train": "train", "validation": "val", "test": "test"}
_PARQUET_SPLIT = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
PLACEHOLDER = "<image>"
IMAGE_FILE = "img_diagram.png"
PARQUET_COLUMNS = ("images", "problem", "answer")
# data.json fields copied into metadata when present (the rest of the file is bookkeeping).
_EXTRA_FIELDS = ("compact_text", "compact_choices", "problem_type_graph", "problem_type_goal")


def _collapse(text: str) -> str:
    return " ".join(text.split())


def canonical_problem(text: str, file: Path, field: str) -> str:
    """``<image>`` + the problem text, whatever the layout did with the placeholder."""
    count = text.count(PLACEHOLDER)
    if count > 1:
        raise DataFormatError(file, field, f"{count} '{PLACEHOLDER}' placeholders, expected at most 1")
    body = _collapse(text.replace(PLACEHOLDER, " "))
    if not body:
        raise DataFormatError(file, field, "empty problem text")
    return PLACEHOLDER + body


def _record(n: int, split: str, problem: str, answer: str, image: bytes, **extra: Any) -> Record:
    choices = extra.pop("choices", None)
    return Record(
        id=f"{SOURCE}-{n}",
        problem=problem,
        answer=answer,
        choices=choices,
        images=[image],
        source=SOURCE,
        split=split,
        metadata=extra,
    )


# ---------------------------------------------------------------------------- layout 1: folders


def _require(data: dict[str, Any], key: str, file: Path) -> Any:
    if key not in data:
        raise DataFormatError(file, key, "missing")
    return data[key]


def _read_problem_folder(folder: Path, split: str, check_images: bool) -> Record:
    file = folder / "data.json"
    if not file.is_file():
        raise DataFormatError(file, "data.json", "file missing")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFormatError(file, "data.json", f"not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise DataFormatError(file, "data.json", "top level is not an object")

    raw_id = _require(data, "id", file)
    try:
        n = int(raw_id)
    except (TypeError, ValueError):
        raise DataFormatError(file, "id", f"not an integer: {raw_id!r}") from None
    if str(n) != folder.name:
        raise DataFormatError(file, "id", f"{n} does not match its folder name {folder.name!r}")

    text = _require(data, "problem_text", file)
    if not isinstance(text, str):
        raise DataFormatError(file, "problem_text", "not a string")
    choices = _require(data, "choices", file)
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str | int | float) for c in choices)
    ):
        raise DataFormatError(file, "choices", f"expected a list of choice strings, got {choices!r}")
    choices = [_collapse(str(c)) for c in choices]
    letter = _require(data, "answer", file)
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    if not isinstance(letter, str) or letter.strip().upper() not in letters:
        raise DataFormatError(file, "answer", f"expected one of {letters}, got {letter!r}")
    index = letters.index(letter.strip().upper())

    meta: dict[str, Any] = {"layout": "inter-gps", "answer_letter": letters[index]}
    if "precise_value" in data:
        value = data["precise_value"]
        if isinstance(value, list) and len(value) == len(choices):
            value = value[index]  # one value per choice in the release
        if value is not None and not isinstance(value, int | float):
            raise DataFormatError(file, "precise_value", f"not numeric: {value!r}")
        meta["answer_precise_value"] = value
    meta.update({k: data[k] for k in _EXTRA_FIELDS if k in data})

    image_path = folder / IMAGE_FILE
    if not image_path.is_file():
        raise DataFormatError(image_path, IMAGE_FILE, "image file missing")
    image = image_path.read_bytes()
    if check_images:
        check_image(image, image_path, IMAGE_FILE)
    problem = canonical_problem(text, file, "problem_text")
    return _record(n, split, problem, choices[index], image, choices=choices, **meta)


def read_folders(
    root: Path, splits: tuple[str, ...] = SPLITS, check_images: bool = True
) -> dict[str, list[Record]]:
    """Layout 1. Problem folders are read in numeric id order; other entries are ignored."""
    jobs: list[tuple[str, Path]] = []
    for split in splits:
        split_dir = root / FOLDER_NAMES[split]
        if not split_dir.is_dir():
            raise DataFormatError(split_dir, FOLDER_NAMES[split], "split folder missing")
        folders = [p for p in split_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        jobs += [(split, p) for p in sorted(folders, key=lambda p: int(p.name))]
    out: dict[str, list[Record]] = {s: [] for s in splits}
    for split, folder in progress(jobs, len(jobs), "geometry3k (folders)"):
        out[split].append(_read_problem_folder(folder, split, check_images))
    return out


# ---------------------------------------------------------------------------- layout 2: parquet


def find_parquet_files(root: Path) -> dict[str, list[Path]]:
    """Split name -> shard files, from ``<split>.parquet`` or ``<split>-XXXXX-of-YYYYY.parquet``."""
    found: dict[str, list[Path]] = {}
    for folder in (root, root / "data"):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.parquet")):
            split = _PARQUET_SPLIT.get(re.split(r"[-.]", path.name, maxsplit=1)[0])
            if split is not None:
                found.setdefault(split, []).append(path)
    return found


def _image_bytes(cell: Any, file: Path, field: str) -> bytes:
    """A parquet image cell: ``{bytes, path}`` (HF image feature) or raw bytes."""
    if isinstance(cell, bytes | bytearray):
        return bytes(cell)
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"])
        if cell.get("path"):
            path = Path(cell["path"])
            path = path if path.is_absolute() else file.parent / path
            if path.is_file():
                return path.read_bytes()
            raise DataFormatError(file, field, f"no embedded bytes and image path {path} not found")
    raise DataFormatError(file, field, f"not an image cell ({type(cell).__name__}); expected {{bytes, path}}")


def read_parquet(
    root: Path, splits: tuple[str, ...] = SPLITS, check_images: bool = True
) -> dict[str, list[Record]]:
    """Layout 2. Ids come from row order: see the module docstring."""
    files = find_parquet_files(root)
    tables = {}
    for split in splits:
        if split not in files:
            raise DataFormatError(root, split, "no parquet file for this split")
        for path in files[split]:
            names = pq.read_schema(path).names
            missing = [c for c in PARQUET_COLUMNS if c not in names]
            if missing:
                raise DataFormatError(path, missing[0], f"missing column(s) {missing}; found columns {names}")
            tables[path] = pq.read_table(path, columns=list(PARQUET_COLUMNS)).to_pylist()
    total = sum(len(rows) for rows in tables.values())
    out: dict[str, list[Record]] = {s: [] for s in splits}

    def rows():
        for split in splits:
            for path in files[split]:
                for i, row in enumerate(tables[path]):
                    yield split, path, i, row

    for split, path, i, row in progress(rows(), total, "geometry3k (parquet)"):
        n = SPLIT_ID_START[split] + len(out[split])
        out[split].append(_published_row_record(row, split, n, path, f"row {i}", check_images))
    return out


def _published_row_record(
    row: dict[str, Any], split: str, n: int, file: Path | str, where: str, check_images: bool
) -> Record:
    """One row of the parquet / hub layout (``images``, ``problem``, ``answer``) as a record."""
    images, problem, answer = row["images"], row["problem"], row["answer"]
    if not isinstance(images, list) or len(images) != 1:
        raise DataFormatError(file, f"images ({where})", f"expected one image, got {images!r:.80}")
    image = _image_bytes(images[0], Path(file), f"images[0] ({where})")
    if check_images:
        check_image(image, file, f"images[0] ({where})")
    if not isinstance(problem, str):
        raise DataFormatError(file, f"problem ({where})", "not a string")
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise DataFormatError(file, f"answer ({where})", f"expected a value string, got {answer!r}")
    text = canonical_problem(problem, file, f"problem ({where})")
    return _record(n, split, text, _collapse(answer), image, layout="parquet")


# ---------------------------------------------------------------------------- the hub dataset

HUB_ID = "hiyouga/geometry3k"


def read_hub(dataset_id: str = HUB_ID, split: str = "test", check_images: bool = False) -> list[Record]:
    """One split of the hub copy (``hiyouga/geometry3k``: the parquet layout) as canonical
    records, the same ones ``convert`` makes from a local copy of those files.

    Loaded with ``datasets.load_dataset``, so it needs the hub or a local Hugging Face cache
    (``HF_HUB_OFFLINE=1`` reads the cache only).
    """
    import datasets

    canonical = _PARQUET_SPLIT.get(split)
    if canonical is None:
        raise DataFormatError(dataset_id, "split", f"unknown split {split!r}; choose from {SPLITS}")
    table = datasets.load_dataset(dataset_id, split=canonical).with_format("arrow")
    missing = [c for c in PARQUET_COLUMNS if c not in table.column_names]
    if missing:
        raise DataFormatError(
            dataset_id, missing[0], f"missing column(s) {missing}; found columns {table.column_names}"
        )
    rows = table.select_columns(list(PARQUET_COLUMNS))[:].to_pylist()
    return [
        _published_row_record(
            row, canonical, SPLIT_ID_START[canonical] + i, dataset_id, f"row {i}", check_images
        )
        for i, row in enumerate(rows)
    ]


# ---------------------------------------------------------------------------- entry points


def detect_layout(root: Path) -> str:
    """``folders`` when ``train/`` (etc.) holds problem folders, ``parquet`` when split files exist."""
    if any((root / name).is_dir() for name in FOLDER_NAMES.values()):
        return "folders"
    if find_parquet_files(root):
        return "parquet"
    raise DataFormatError(root, "layout", "neither train/val/test folders nor split parquet files found")


def convert(
    root: Path, layout: str = "auto", splits: tuple[str, ...] = SPLITS, check_images: bool = True
) -> dict[str, list[Record]]:
    """Read a Geometry3K release (either layout) into canonical records, per split."""
    root = Path(root)
    layout = detect_layout(root) if layout == "auto" else layout
    reader = read_folders if layout == "folders" else read_parquet
    return reader(root, splits, check_images)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "geometry3k",
        help="Geometry3K (Inter-GPS folders or EasyR1/verl parquet) -> record parquet per split",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "src", type=Path, help="release root: has train/ val/ test/ folders, or split parquet files"
    )
    p.add_argument("--out-dir", type=Path, required=True, help="writes <split>.parquet here")
    p.add_argument("--layout", choices=("auto", "folders", "parquet"), default="auto")
    p.add_argument(
        "--splits", default=",".join(SPLITS), help="comma-separated subset of train,validation,test"
    )
    p.add_argument("--no-check-images", action="store_true", help="skip decoding every diagram")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise SystemExit(f"unknown split(s) {unknown}; choose from {SPLITS}")
    by_split = convert(args.src, args.layout, splits, check_images=not args.no_check_images)
    written = write_record_sets({args.out_dir / f"{s}.parquet": recs for s, recs in by_split.items()})
    rows = []
    for split, recs in by_split.items():
        ids = [int(r.id.rsplit("-", 1)[1]) for r in recs]
        span = f"{min(ids)}-{max(ids)}" if ids else "-"
        with_choices = sum(r.choices is not None for r in recs)
        rows.append((split, len(recs), PUBLISHED_COUNTS[split], span, with_choices))
    print_table("geometry3k", ("split", "records", "published", "ids", "with choices"), rows)
    console.print(f"wrote {', '.join(str(p) for p in written)}")
    return 0
