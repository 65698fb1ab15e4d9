"""Parquet storage for :class:`~mm_gmpo.data.records.Record`.

One parquet file holds one split of one dataset, images included, so a prepared dataset is a
self-contained, portable file set. Columns:

==================  ===================================  ===========================================
column              arrow type                           meaning
==================  ===================================  ===========================================
``id``              string                               unique within the dataset
``problem``         string                               may hold ``<image>`` placeholders
``answer``          list<string>                         the answer, always stored as a list ...
``answer_is_list``  bool                                 ... and this flag says whether the record
                                                         had a list (``["6"]`` vs ``"6"``), so a
                                                         string and a one-element list both
                                                         round-trip exactly
``choices``         list<string>, null when absent       multiple-choice texts, in letter order
``images``          list<struct<bytes: binary,           image bytes embedded; ``path`` keeps the
                    path: string>>                       original file name (informational)
``source``          string                               dataset name, e.g. ``geometry3k``
``split``           string                               ``train`` / ``validation`` / ``test`` ...
``metadata``        string                               JSON object of free per-record fields
==================  ===================================  ===========================================

The ``images`` column uses the same struct as Hugging Face ``datasets`` image features, and the
file carries the ``huggingface`` schema metadata, so ``datasets.load_dataset("parquet",
data_files=...)`` decodes it into PIL images directly (the EasyR1 / verl convention).
``metadata`` is a JSON string rather than a struct because its keys differ between datasets
and a struct column would force one schema on all of them.

Writes are atomic: the table goes to a temporary file in the target directory and is renamed
into place, so a crash or an error never leaves a half-written dataset behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mm_gmpo.data.records import ImageRef, Record

_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("problem", pa.string()),
        ("answer", pa.list_(pa.string())),
        ("answer_is_list", pa.bool_()),
        ("choices", pa.list_(pa.string())),
        ("images", pa.list_(_IMAGE)),
        ("source", pa.string()),
        ("split", pa.string()),
        ("metadata", pa.string()),
    ]
)

# The `datasets` feature description matching SCHEMA, written by hand so that writing a
# dataset does not import `datasets`; "Sequence" is understood by every `datasets` >= 3.
_HF_FEATURES = {
    "id": {"dtype": "string", "_type": "Value"},
    "problem": {"dtype": "string", "_type": "Value"},
    "answer": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
    "answer_is_list": {"dtype": "bool", "_type": "Value"},
    "choices": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
    "images": {"feature": {"_type": "Image"}, "_type": "Sequence"},
    "source": {"dtype": "string", "_type": "Value"},
    "split": {"dtype": "string", "_type": "Value"},
    "metadata": {"dtype": "string", "_type": "Value"},
}
SCHEMA = SCHEMA.with_metadata({"huggingface": json.dumps({"info": {"features": _HF_FEATURES}})})


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class RecordFormatError(ValueError):
    """A parquet file that is not in the record format (names the file and the column)."""


def _image_cell(ref: ImageRef) -> dict[str, Any]:
    """Embed an image: bytes are kept as given, a path is read so the file set stays portable."""
    if isinstance(ref, bytes | bytearray):
        return {"bytes": bytes(ref), "path": None}
    path = Path(ref)
    return {"bytes": path.read_bytes(), "path": path.name}


def records_to_table(records: Iterable[Record]) -> pa.Table:
    """Encode records as an arrow table with :data:`SCHEMA`."""
    cols: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for rec in records:
        is_list = isinstance(rec.answer, list)
        cols["id"].append(str(rec.id))
        cols["problem"].append(rec.problem)
        cols["answer"].append([str(a) for a in rec.answer] if is_list else [str(rec.answer)])
        cols["answer_is_list"].append(is_list)
        cols["choices"].append(None if rec.choices is None else [str(c) for c in rec.choices])
        cols["images"].append([_image_cell(ref) for ref in rec.images])
        cols["source"].append(rec.source)
        cols["split"].append(rec.split)
        cols["metadata"].append(json.dumps(rec.metadata, ensure_ascii=False, sort_keys=True))
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def _write_tmp(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        pq.write_table(table, tmp, compression="zstd")
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def write_record_sets(outputs: Mapping[str | Path, Iterable[Record]]) -> list[Path]:
    """Write several files (e.g. the splits of one dataset) all-or-nothing.

    Every table is encoded and written to a temporary file first; only when all succeeded are
    they renamed into place. An error part-way leaves no output and no temporary files.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, records in outputs.items():
            target = Path(path)
            staged.append((_write_tmp(target, records_to_table(records)), target))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, target in staged:
        os.replace(tmp, target)
    return [target for _, target in staged]


def write_records(path: str | Path, records: Iterable[Record]) -> Path:
    """Write one parquet file atomically (temporary file in the same directory, then rename)."""
    return write_record_sets({path: records})[0]


def read_parquet(path: Path) -> pa.Table:
    """The file's table; a missing file or one that is not parquet is a one-line error."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return pq.read_table(path)
    except pa.ArrowInvalid as exc:
        raise RecordFormatError(f"{path}: not a parquet file ({exc})") from None


def read_records(path: str | Path) -> list[Record]:
    """Read a file written by :func:`write_records`; images come back as bytes."""
    path = Path(path)
    table = read_parquet(path)
    missing = [name for name in SCHEMA.names if name not in table.column_names]
    if missing:
        raise RecordFormatError(
            f"{path}: not a record file, missing column(s) {missing}; found {table.column_names}"
        )
    out = []
    for row in table.select(SCHEMA.names).to_pylist():
        answer = row["answer"] or []
        out.append(
            Record(
                id=row["id"],
                problem=row["problem"],
                answer=list(answer) if row["answer_is_list"] else (answer[0] if answer else ""),
                choices=row["choices"],
                images=[cell["bytes"] for cell in row["images"] or []],
                source=row["source"] or "",
                split=row["split"] or "",
                metadata=json.loads(row["metadata"]) if row["metadata"] else {},
            )
        )
    return out
