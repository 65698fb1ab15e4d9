"""Text-only math sets (MATH, AIME, AMC, MATH500, Minerva, OlympiadBench, GSM8K ...) into records.

Accepts jsonl, parquet, or a Hugging Face ``save_to_disk`` folder (arrow). Field names are
configurable because every release spells them differently.

Answer handling: a list answer (Minerva, OlympiadBench: any element may match) stays a list;
numbers become strings with ``str`` (AMC's ``142.0`` stays ``"142.0"``; the verifier compares
values, not text); surrounding whitespace is stripped from every answer (Minerva's carry a
trailing newline). Fields other than problem/answer/id/choices go to ``metadata``.
Ids are ``<source>-<id field>`` or, without an id field, ``<source>-<row index>``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from data_prep.common import DataFormatError, console, print_table, progress
from mm_gmpo.data.record_io import write_record_sets
from mm_gmpo.data.records import Record


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    # split("\n"), not splitlines(): GSM8K has U+2028 inside strings, which splitlines breaks on.
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, f"line {n}", f"not valid JSON ({e})") from e
        if not isinstance(row, dict):
            raise DataFormatError(path, f"line {n}", "not a JSON object")
        rows.append(row)
    return rows


def _read_arrow_dir(path: Path, hf_split: str | None) -> list[dict[str, Any]]:
    import datasets  # slow import, only needed for this format

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if hf_split is None and len(ds) == 1:
            hf_split = next(iter(ds))
        if hf_split not in ds:
            raise DataFormatError(path, "--hf-split", f"choose one of the saved splits {list(ds)}")
        ds = ds[hf_split]
    return ds.to_list()


def read_rows(path: Path, fmt: str = "auto", hf_split: str | None = None) -> list[dict[str, Any]]:
    """Rows as dicts from jsonl, parquet or a ``save_to_disk`` folder."""
    if fmt == "auto":
        fmt = "arrow" if path.is_dir() else path.suffix.lstrip(".").lower()
        fmt = {"json": "jsonl", "pq": "parquet"}.get(fmt, fmt)
    if not path.exists():
        raise DataFormatError(path, "input", "not found")
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    if fmt == "arrow":
        return _read_arrow_dir(path, hf_split)
    raise DataFormatError(path, "format", f"unknown format {fmt!r} (jsonl, parquet, arrow)")


def _answer(value: Any, file: Path, field: str) -> str | list[str] | None:
    """The answer as text or a list of texts; None when it is empty (nothing to reward)."""
    if isinstance(value, bool) or value is None:
        raise DataFormatError(file, field, f"expected a string, number or list, got {value!r}")
    if isinstance(value, str | int | float):
        return str(value).strip() or None
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        answers = [str(v).strip() for v in value if str(v).strip()]
        return answers or None
    raise DataFormatError(file, field, f"expected a string, number or non-empty list, got {value!r:.80}")


def convert(
    path: Path,
    *,
    source: str,
    split: str,
    problem_key: str = "problem",
    answer_key: str = "answer",
    id_key: str | None = None,
    choices_key: str | None = None,
    fmt: str = "auto",
    hf_split: str | None = None,
    on_empty: str = "drop",
) -> tuple[list[Record], int]:
    """Read one file into records; a missing key names the file, the field and the row.

    Rows with an empty answer can never earn a reward, so they are dropped and counted
    (``on_empty="drop"``, returned as the second value) or stop the conversion (``"fail"``).
    Ids come from the row index before dropping, so they do not shift.
    """
    rows = read_rows(path, fmt, hf_split)
    if rows:
        wanted = [k for k in (problem_key, answer_key, id_key, choices_key) if k]
        missing = [k for k in wanted if k not in rows[0]]
        if missing:
            raise DataFormatError(path, missing[0], f"missing; the rows have fields {sorted(rows[0])}")
    used = {problem_key, answer_key, id_key, choices_key}
    records, seen, dropped = [], set(), 0
    for i, row in progress(enumerate(rows), len(rows), f"math {path.name}"):
        where = f"row {i}"
        for key in (problem_key, answer_key, id_key):
            if key and key not in row:
                raise DataFormatError(path, f"{key} ({where})", "missing")
        problem = row[problem_key]
        if not isinstance(problem, str) or not problem.strip():
            raise DataFormatError(path, f"{problem_key} ({where})", "not a non-empty string")
        choices = row.get(choices_key) if choices_key else None
        if choices is not None and not (
            isinstance(choices, list) and all(isinstance(c, str) for c in choices)
        ):
            raise DataFormatError(path, f"{choices_key} ({where})", "expected a list of strings")
        rid = f"{source}-{row[id_key] if id_key else i}"
        if rid in seen:
            raise DataFormatError(path, f"{id_key} ({where})", f"duplicate id {rid!r}")
        seen.add(rid)
        answer = _answer(row[answer_key], path, f"{answer_key} ({where})")
        if answer is None:
            if on_empty == "fail":
                raise DataFormatError(path, f"{answer_key} ({where})", "empty answer")
            dropped += 1
            continue
        records.append(
            Record(
                id=rid,
                problem=problem,
                answer=answer,
                choices=choices or None,
                source=source,
                split=split,
                metadata={k: v for k, v in row.items() if k not in used},
            )
        )
    return records, dropped


def _default_split(stem: str) -> str:
    return "train" if "train" in stem.lower() else "test"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "math",
        help="math text sets (jsonl / parquet / arrow) -> record parquet per input",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", type=Path, nargs="+", help="jsonl/parquet files or save_to_disk folders")
    p.add_argument("--out-dir", type=Path, required=True, help="writes <source>.parquet here")
    p.add_argument("--format", choices=("auto", "jsonl", "parquet", "arrow"), default="auto")
    p.add_argument("--problem-key", default="problem")
    p.add_argument("--answer-key", default="answer")
    p.add_argument("--id-key", default=None, help="field holding a unique id (default: row index)")
    p.add_argument("--choices-key", default=None, help="field holding a list of choice texts")
    p.add_argument("--source", default=None, help="dataset name (default: the input's file stem)")
    p.add_argument("--split", default=None, help="split name (default: train if the stem says so, else test)")
    p.add_argument("--hf-split", default=None, help="split to take from a saved DatasetDict")
    p.add_argument("--on-empty", choices=("drop", "fail"), default="drop", help="rows with an empty answer")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.source and len(args.inputs) > 1:
        raise SystemExit("--source names one dataset; give one input with it")
    outputs, rows = {}, []
    for path in args.inputs:
        stem = path.name.split(".")[0]
        source = args.source or stem
        split = args.split or _default_split(stem)
        records, dropped = convert(
            path,
            source=source,
            split=split,
            problem_key=args.problem_key,
            answer_key=args.answer_key,
            id_key=args.id_key,
            choices_key=args.choices_key,
            fmt=args.format,
            hf_split=args.hf_split,
            on_empty=args.on_empty,
        )
        outputs[args.out_dir / f"{source}.parquet"] = records
        n_list = sum(isinstance(r.answer, list) for r in records)
        rows.append((source, split, len(records), n_list, dropped))
    written = write_record_sets(outputs)
    print_table("math", ("source", "split", "records", "list answers", "dropped: empty answer"), rows)
    console.print(f"wrote {len(written)} file(s) to {args.out_dir}")
    return 0
