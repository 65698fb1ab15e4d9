"""Load problems from jsonl / parquet / arrow (HF ``save_to_disk``) / an HF dataset id into Records.

Published datasets name their fields differently (``problem`` / ``question``, ``answer`` /
``solution`` / ``reward_model.ground_truth``...), so the key of each field is configurable, and
dotted keys reach into nested dicts. A bad row (no answer, empty problem) either stops the load
with a message naming the file, the row and the field (``on_bad_record="error"``, the default:
a silently shrunken eval set changes the reported score), or is counted, logged and skipped
(``"skip"``).

Fields not mapped to a Record field are kept in ``Record.metadata`` (e.g. MATH's level and subject).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mm_gmpo.data.images import encode_png
from mm_gmpo.data.records import BadRecordError, ImageRef, Record
from mm_gmpo.hub import check_dataset_id, looks_like_hub_id

logger = logging.getLogger(__name__)

OnBadRecord = Literal["error", "skip"]
DataFormat = Literal["auto", "jsonl", "json", "parquet", "arrow", "hf"]

_RECORD_FIELDS = ("id", "problem", "answer", "choices", "images", "source", "split", "metadata")


@dataclass
class LoadResult:
    """Records plus what happened on the way: rows read and bad rows skipped, by reason."""

    records: list[Record]
    n_rows: int
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())


def default_data_dir() -> Path:
    """The data folder: ``$MM_GMPO_DATA_DIR``, else the repository's ``data/`` (shipped with
    the package too). The one resolver: :func:`mm_gmpo.resources.data_dir`."""
    from mm_gmpo.resources import data_dir

    return data_dir()


# Names that can only be files: never taken for a hub id ("geometry3k/train.parquet").
_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".arrow")


def looks_like_hf_id(text: str) -> bool:
    """``owner/name`` (no file suffix): what ``datasets.load_dataset`` takes."""
    return looks_like_hub_id(text) and not text.lower().endswith(_FILE_SUFFIXES)


def split_hf_source(src: str | Path) -> tuple[str | Path, str | None]:
    """``owner/name@split`` -> (``owner/name``, ``split``); anything else -> (src, None).

    An existing path is never split, so a file whose name holds an ``@`` still loads.
    """
    text = str(src)
    if isinstance(src, str) and "@" in text and not Path(text).exists():
        name, split = text.rsplit("@", 1)
        if looks_like_hf_id(name) and split:
            return name, split
    return src, None


def resolve_data_source(src: str | Path, data_dir: Path | None = None) -> str | Path:
    """Where a data argument points: an existing path as given; else a relative path that
    exists under the data folder (so a config can say ``math/math500.jsonl`` and run from any
    directory); else ``src`` unchanged (a hub id, or a missing file the loader reports)."""
    path = Path(src).expanduser()
    if path.exists() or path.is_absolute() or str(src).startswith(("./", "../", "~")):
        return src
    try:
        root = data_dir if data_dir is not None else default_data_dir()
    except FileNotFoundError:
        return src
    candidate = root / path
    return candidate if candidate.exists() else src


# --------------------------------------------------------------------------- raw row readers


def _detect_format(path: Path) -> DataFormat:
    if path.is_dir():
        return "arrow"
    name = path.name.lower()
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".arrow"):
        return "arrow"
    raise ValueError(
        f"{path}: cannot tell the format from the name; pass format= (jsonl, json, parquet, arrow)"
    )


def _iter_jsonl(path: Path) -> Iterator[dict[str, Any] | BadRecordError]:
    """Rows of a jsonl file; a line that is not a JSON object comes as a :class:`BadRecordError`
    naming the file and line, for the caller to raise or count (``on_bad_record``)."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield BadRecordError(
                    f"{path}: line {line_no}: invalid JSON at column {e.colno} ({e.msg.removesuffix(' at')})",
                    "invalid JSON",
                )
                continue
            yield _object_or_refusal(row, f"{path}: line {line_no}")


def _iter_json(path: Path) -> Iterator[dict[str, Any] | BadRecordError]:
    """A JSON array of objects (DeepScaleR's ``deepscaler.json``), or an object with one list
    field (e.g. {"data": [...]}). A file that is not such a list stops the load with its name;
    an element that is not an object comes as a :class:`BadRecordError` naming its index, for
    the caller to raise or count (``on_bad_record``)."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg}); "
                "a .json data file is one JSON list of row objects (one object per line: name it .jsonl)"
            ) from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ValueError(f"{path}: expected a JSON list of rows (or an object with one list field)")
        data = lists[0]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of rows, got a JSON {type(data).__name__}")
    for index, row in enumerate(data):
        yield _object_or_refusal(row, f"{path}: element {index}")


def _object_or_refusal(row: Any, where: str) -> dict[str, Any] | BadRecordError:
    """A parsed row that is a JSON object, else the refusal naming where it was and what it is."""
    if isinstance(row, dict):
        return row
    return BadRecordError(f"{where}: a JSON {type(row).__name__}, not an object", "not a JSON object")


def _iter_arrow_table(table: Any, chunk: int = 1024) -> Iterator[dict[str, Any]]:
    for start in range(0, table.num_rows, chunk):
        yield from table.slice(start, chunk).to_pylist()


def _iter_parquet(path: Path) -> Iterator[dict[str, Any]]:
    """Any parquet file; files in the project's record format (``record_io``) are decoded by
    ``record_io`` so string-vs-list answers and JSON metadata come back exactly."""
    from mm_gmpo.data import record_io

    table = record_io.read_parquet(path)
    if set(record_io.SCHEMA.names) <= set(table.column_names):
        for rec in record_io.read_records(path):
            yield rec.to_dict()
    else:
        yield from _iter_arrow_table(table)


def _iter_dataset(ds: Any, chunk: int = 1024) -> Iterator[dict[str, Any]]:
    """Rows of a ``datasets.Dataset`` as stored, so Image columns come as {"bytes", "path"}
    dicts instead of being decoded into PIL images (which Records do not hold)."""
    arrow_view = ds.with_format("arrow")
    for start in range(0, len(ds), chunk):
        yield from arrow_view[start : start + chunk].to_pylist()


def _pick_split(obj: Any, split: str | None, where: str) -> Any:
    """A DatasetDict needs a split name; a single Dataset is returned as is."""
    from datasets import DatasetDict

    if not isinstance(obj, DatasetDict):
        return obj
    if split is None:
        if len(obj) == 1:
            return next(iter(obj.values()))
        raise ValueError(
            f"{where} holds splits {sorted(obj)}; choose one: {where}@{sorted(obj)[0]} (or hf_split=)"
        )
    if split not in obj:
        raise ValueError(f"{where} has no split {split!r}; available: {sorted(obj)}")
    return obj[split]


def _iter_rows(
    src: str | Path, fmt: DataFormat, hf_split: str | None, hf_config: str | None
) -> Iterator[dict[str, Any] | BadRecordError]:
    path = Path(src)
    if fmt == "auto":
        if path.exists():
            fmt = _detect_format(path)
        elif isinstance(src, str) and looks_like_hf_id(src):
            fmt = "hf"
        else:
            raise FileNotFoundError(
                f"no such data file or directory: {src} (relative paths are looked up in the working "
                "directory, then in the data folder: $MM_GMPO_DATA_DIR or the repository's data/)"
            )
    if fmt == "jsonl":
        return _iter_jsonl(path)
    if fmt == "json":
        return _iter_json(path)
    if fmt == "parquet":
        return _iter_parquet(path)
    if fmt == "arrow":
        import datasets

        if path.is_dir():
            ds = _pick_split(datasets.load_from_disk(str(path)), hf_split, str(path))
        else:
            ds = datasets.Dataset.from_file(str(path))
        return _iter_dataset(ds)
    if fmt == "hf":
        import datasets

        # Real runs only (needs the hub or a local HF cache); tests reach only the check.
        check_dataset_id(str(src), str(src))
        ds = _pick_split(datasets.load_dataset(str(src), hf_config, split=hf_split), hf_split, str(src))
        return _iter_dataset(ds)
    raise ValueError(f"unknown data format {fmt!r}")


# --------------------------------------------------------------------------- row -> Record

_MISSING = object()


def _get(row: dict[str, Any], key: str) -> Any:
    """``row[key]``, or the nested value for a dotted key ("reward_model.ground_truth")."""
    if key in row:
        return row[key]
    cur: Any = row
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _answer_value(value: Any) -> str | list[str] | None:
    """Numbers become strings, lists stay lists (of strings); None/empty means no answer."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, list | tuple):
        items = [str(v) for v in value if v is not None and str(v).strip()]
        return items or None
    return None


def _image_refs(value: Any, image_root: Path | None) -> list[ImageRef]:
    """Images as bytes or paths: HF {"bytes", "path"} structs, PIL images (re-encoded as PNG),
    raw bytes, or paths (relative ones resolved against ``image_root``)."""
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    refs: list[ImageRef] = []
    for item in items:
        if isinstance(item, dict):
            data, path = item.get("bytes"), item.get("path")
            item = data if data else path
        if isinstance(item, bytes | bytearray):
            refs.append(bytes(item))
        elif isinstance(item, str):
            if image_root is not None and not os.path.isabs(item) and "://" not in item:
                item = str(image_root / item)
            refs.append(item)
        elif hasattr(item, "save"):  # a PIL image
            refs.append(encode_png(item))
        else:
            raise TypeError(f"unsupported image value of type {type(item).__name__}")
    return refs


def _root_key(key: str | None) -> str | None:
    return key.split(".", 1)[0] if key else None


@dataclass
class _RowMapper:
    """Turns one raw row into a Record with the configured keys; a bad row raises
    :class:`BadRecordError` whose ``reason`` is the tally key of skipped rows."""

    question_key: str
    answer_key: str
    choices_key: str | None
    images_key: str | None
    id_key: str | None
    image_root: Path | None
    source: str | None
    split: str | None
    default_source: str = ""
    where: str = ""

    def _question_and_answer(self, row: dict[str, Any], i: int) -> tuple[str, str | list[str]]:
        problem = _get(row, self.question_key)
        answer_raw = _get(row, self.answer_key)
        answer = None if answer_raw is _MISSING else _answer_value(answer_raw)
        problem_text = problem if isinstance(problem, str) else None
        problem_bad = problem is _MISSING or problem_text is None or not problem_text.strip()
        if answer is not None and not problem_bad:
            return problem_text, answer
        if problem_bad:
            missing = problem is _MISSING
            reason = f"missing question key {self.question_key!r}" if missing else "empty problem"
            bad_field = self.question_key
        elif answer_raw is _MISSING:
            reason, bad_field = f"missing answer key {self.answer_key!r}", self.answer_key
        else:
            reason, bad_field = "empty or unusable answer", self.answer_key
        raise BadRecordError(
            f"{self.where}: row {i}: {reason} (field {bad_field!r}; row keys: {sorted(row)}); "
            "pass on_bad_record='skip' to drop such rows",
            reason,
        )

    def record(self, row: dict[str, Any], i: int) -> Record:
        problem_text, answer = self._question_and_answer(row, i)
        keys = (self.question_key, self.answer_key, self.choices_key, self.images_key, self.id_key)
        consumed = {_root_key(k) for k in keys} - {None}
        choices_raw = _get(row, self.choices_key) if self.choices_key else _MISSING
        choices = (
            [str(c) for c in choices_raw] if isinstance(choices_raw, list | tuple) and choices_raw else None
        )
        images_raw = _get(row, self.images_key) if self.images_key else _MISSING
        images = [] if images_raw is _MISSING else _image_refs(images_raw, self.image_root)
        rid = _get(row, self.id_key) if self.id_key else _MISSING
        row_source = self.source or (row.get("source") if isinstance(row.get("source"), str) else None)
        rec_source = row_source or self.default_source
        metadata = dict(row.get("metadata") or {}) if isinstance(row.get("metadata"), dict) else {}
        metadata.update(
            {
                k: v
                for k, v in row.items()
                if k not in consumed and k not in _RECORD_FIELDS and k != "metadata"
            }
        )
        return Record(
            id=str(rid) if rid is not _MISSING and rid is not None else f"{rec_source}-{i}",
            problem=problem_text,
            answer=answer,
            choices=choices,
            images=images,
            source=rec_source,
            split=self.split if self.split is not None else str(row.get("split") or ""),
            metadata=metadata,
        )


def load_records_with_report(
    src: str | Path,
    *,
    question_key: str = "problem",
    answer_key: str = "answer",
    choices_key: str | None = "choices",
    images_key: str | None = "images",
    id_key: str | None = "id",
    source: str | None = None,
    split: str | None = None,
    on_bad_record: OnBadRecord = "error",
    format: DataFormat = "auto",
    hf_split: str | None = None,
    hf_config: str | None = None,
    image_root: str | Path | None = None,
    limit: int | None = None,
) -> LoadResult:
    """Read ``src`` into Records and report skipped rows.

    ``src`` is a file (.jsonl, .json, .parquet, .arrow), an HF ``save_to_disk`` directory, or an
    HF dataset id ("owner/name", loaded with ``datasets.load_dataset``; ``owner/name@split``
    picks a split, like ``hf_split``). A relative path that is not in the working directory
    is looked up in the data folder (:func:`resolve_data_source`). The optional keys
    (choices, images, id) are used when the row has them. Ids default to ``{source}-{row}``
    where ``source`` defaults to the row's ``source`` field, else the file or dataset name.
    Relative image paths resolve against ``image_root`` (default: the file's folder).
    ``limit`` stops after that many records (for quick runs).
    """
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
    src, at_split = split_hf_source(src)
    hf_split = hf_split or at_split
    src = resolve_data_source(src)
    where = str(src)
    path = Path(src)
    # Default source: the file's stem, the directory's name, or the dataset id's name part.
    default_source = source or (path.stem if path.is_file() else path.name) or where
    if image_root is None and path.exists():
        image_root = path if path.is_dir() else path.parent
    root = Path(image_root) if image_root is not None else None

    mapper = _RowMapper(question_key, answer_key, choices_key, images_key, id_key, root, source, split)
    mapper.default_source, mapper.where = default_source, where
    records: list[Record] = []
    skipped: Counter[str] = Counter()
    n_rows = 0
    for i, row in enumerate(_iter_rows(src, format, hf_split, hf_config)):
        if limit is not None and len(records) >= limit:
            break
        n_rows += 1
        try:
            if isinstance(row, BadRecordError):  # a line the reader could not parse
                raise row
            records.append(mapper.record(row, i))
        except BadRecordError as exc:
            if on_bad_record == "error":
                raise
            skipped[exc.reason] += 1
    if skipped:
        logger.warning(
            "%s: skipped %d of %d rows: %s",
            where,
            sum(skipped.values()),
            n_rows,
            ", ".join(f"{n} {r}" for r, n in skipped.items()),
        )
    return LoadResult(records=records, n_rows=n_rows, skipped=skipped)


def load_records(src: str | Path, **kwargs: Any) -> list[Record]:
    """:func:`load_records_with_report` without the report (skips are still logged)."""
    return load_records_with_report(src, **kwargs).records
