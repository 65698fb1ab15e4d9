"""Run benchmarks: generate, score, write predictions batch by batch, resume after a crash.

Files in the output folder, per benchmark ``B``:

* ``B.jsonl``: first line ``{"header": {...settings...}}``, then one line per problem:
  ``{"index", "id", "prompt", "answer", "choices", "samples": [{"response", "extracted",
  "correct", "num_tokens", "truncated", "timed_out", "error"}, ...]}``. Lines are appended
  and flushed to disk after every batch, so a crash loses at most the batch in flight; a
  torn last line is cut off on resume.
* ``B.metrics.json``: written (atomically) only when every problem is in ``B.jsonl``; its
  presence is the done marker. A re-run skips a benchmark whose marker matches the settings,
  resumes one whose jsonl matches, and refuses (unless ``force``) one made with different
  settings: mixing two protocols in one file would report a number that means nothing.

Metrics are always recomputed from ``B.jsonl`` (:func:`mm_gmpo.evaluation.metrics.benchmark_metrics`),
so a resumed run reports exactly what an uninterrupted one would. Sampling is seeded per
batch (``protocol.seed + index of the batch's first problem``) for the same reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mm_gmpo.data.records import Record
from mm_gmpo.evaluation.benchmarks import Benchmark, EvalProtocol
from mm_gmpo.evaluation.generators import Generated, Generator
from mm_gmpo.evaluation.metrics import benchmark_metrics
from mm_gmpo.rewards import RewardScorer, extract_choice, final_answer

log = logging.getLogger("mm_gmpo.evaluation")

# Settings that must agree for a file to be resumed or a finished benchmark to be skipped.
_MATCH_KEYS = ("benchmark", "model", "protocol", "num_problems", "ids_sha1", "source")


class SettingsMismatch(RuntimeError):
    """Existing outputs were made with other settings; the message names the differences."""


def predictions_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f"{name}.jsonl"


def metrics_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f"{name}.metrics.json"


def _ids_sha1(records: list[Record]) -> str:
    return hashlib.sha1("\n".join(r.id for r in records).encode()).hexdigest()


def run_settings(
    bench: Benchmark, records: list[Record], protocol: EvalProtocol, model: str, source: str, backend: str
) -> dict[str, Any]:
    """What identifies a benchmark run (``backend`` is recorded but a resume may switch it)."""
    return {
        "benchmark": bench.name,
        "title": bench.title,
        "kind": bench.kind,
        "model": model,
        "backend": backend,
        "protocol": protocol.to_dict(),
        "num_problems": len(records),
        "ids_sha1": _ids_sha1(records),
        "source": source,
    }


def _mismatch(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in _MATCH_KEYS if old.get(k) != new.get(k)]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_predictions(path: Path, repair: bool = False) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(header, rows) of a predictions file. A last line that does not parse is the batch a crash
    interrupted: with ``repair`` it is cut off the file, otherwise it is an error."""
    if not path.exists():
        return None, []
    raw = path.read_bytes()
    header: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = []
    good_end = 0
    pos = 0
    for line in raw.splitlines(keepends=True):
        pos += len(line)
        if not line.strip():
            good_end = pos
            continue
        try:
            obj = json.loads(line)
            if not line.endswith(b"\n"):
                raise ValueError("line not terminated")
        except ValueError as exc:
            if pos == len(raw) and repair:
                log.warning(
                    "%s: dropping a torn last line (%d bytes) from an interrupted batch", path, len(line)
                )
                break
            raise ValueError(f"{path}: unreadable line ending at byte {pos}: {exc}") from exc
        good_end = pos
        if "header" in obj and header is None and not rows:
            header = obj["header"]
        else:
            rows.append(obj)
    if repair and good_end < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return header, rows


def _extract(text: str, record: Record, kind: str) -> str | None:
    """The answer the verifier reads: the final boxed answer; for multiple choice without one,
    the letter the response commits to (as the geometry verifier falls back to)."""
    boxed = final_answer(text)
    if boxed is None and kind == "geometry" and record.choices:
        return extract_choice(text)
    return boxed


@dataclass
class BenchmarkResult:
    """Outcome of :func:`run_benchmark`: metrics and whether anything had to be generated."""

    name: str
    metrics: dict[str, Any]
    settings: dict[str, Any]
    skipped: bool
    generated_problems: int
    seconds: float


def _tqdm_progress(total: int, initial: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="problem", dynamic_ncols=True)


class _NoProgress:
    def update(self, n: int) -> None:
        return None

    def close(self) -> None:
        return None


def run_benchmark(
    generator: Generator,
    bench: Benchmark,
    records: list[Record],
    protocol: EvalProtocol,
    out_dir: Path,
    scorer: RewardScorer,
    *,
    source: str,
    model_name: str,
    backend: str,
    batch_size: int = 32,
    force: bool = False,
    progress: bool = True,
    ks: tuple[int, ...] = (),
) -> BenchmarkResult:
    """Evaluate one benchmark into ``out_dir`` (see the module docstring for files and resume).

    ``batch_size`` problems are generated, scored and appended at a time; it bounds what a
    crash can lose.
    """
    if scorer.kind != bench.kind:
        raise ValueError(f"{bench.name} needs a {bench.kind!r} scorer, got {scorer.kind!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pred_file, done_file = predictions_path(out_dir, bench.name), metrics_path(out_dir, bench.name)
    settings = run_settings(bench, records, protocol, model_name, source, backend)
    t0 = time.perf_counter()

    if force:
        pred_file.unlink(missing_ok=True)
        done_file.unlink(missing_ok=True)
    if done_file.exists():
        done = _completed_run(done_file, settings)
        log.info("%s: already done, skipped (pass --force to redo)", bench.name)
        return BenchmarkResult(bench.name, done["metrics"], done["settings"], True, 0, 0.0)
    finished = _finished_rows(pred_file, settings, records)
    todo = [i for i in range(len(records)) if i not in finished]
    if finished:
        log.info("%s: resuming, %d of %d problems already done", bench.name, len(finished), len(records))

    bar = _tqdm_progress(len(records), len(finished), bench.title) if progress else _NoProgress()
    try:
        with open(pred_file, "a", encoding="utf-8") as f:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                batch = [records[i] for i in chunk]
                generated = generator.generate(batch, protocol, seed=protocol.seed + chunk[0])
                lines = score_rows(generated, batch, chunk, bench.kind, protocol, scorer)
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
                f.flush()
                os.fsync(f.fileno())
                bar.update(len(chunk))
    finally:
        bar.close()

    metrics = finalize_predictions(out_dir, bench.name, ks)
    return BenchmarkResult(bench.name, metrics, settings, False, len(todo), time.perf_counter() - t0)


def _completed_run(done_file: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """A finished benchmark's marker, refused when it was made with other settings."""
    done = json.loads(done_file.read_text(encoding="utf-8"))
    diff = _mismatch(done["settings"], settings)
    if diff:
        raise SettingsMismatch(
            f"{done_file} was made with other settings ({'; '.join(diff)}); "
            "pass --force to redo it or use another --out"
        )
    return done


def _finished_rows(pred_file: Path, settings: dict[str, Any], records: list[Record]) -> set[int]:
    """Indices already in a partial predictions file (started with a header if it is new)."""
    header, rows = read_predictions(pred_file, repair=True)
    if header is not None:
        diff = _mismatch(header, settings)
        if diff:
            raise SettingsMismatch(
                f"{pred_file} holds a partial run with other settings ({'; '.join(diff)}); "
                "pass --force to start over or use another --out"
            )
    else:
        rows = []
        with open(pred_file, "w", encoding="utf-8") as f:
            f.write(json.dumps({"header": settings}, ensure_ascii=False) + "\n")
    finished = set()
    for row in rows:
        i = int(row["index"])
        if i >= len(records) or records[i].id != row["id"]:
            raise SettingsMismatch(
                f"{pred_file}: row {i} ({row['id']!r}) does not match the benchmark's records"
            )
        finished.add(i)
    return finished


def finalize_predictions(out_dir: Path, name: str, ks: tuple[int, ...] = ()) -> dict[str, Any]:
    """Score a complete predictions file and write its done marker (``name.metrics.json``).

    The last step of :func:`run_benchmark`, and usable alone to rebuild metrics from files
    (e.g. prediction files produced elsewhere in this format). Refuses an incomplete file.
    """
    pred_file = predictions_path(out_dir, name)
    header, rows = read_predictions(pred_file)
    if header is None:
        raise ValueError(f"{pred_file}: no header line")
    indices = sorted(int(r["index"]) for r in rows)
    if indices != list(range(header["num_problems"])):
        raise ValueError(
            f"{pred_file}: {len(set(indices))} of {header['num_problems']} problems present; "
            "the run is not finished (re-run to resume)"
        )
    rows.sort(key=lambda r: int(r["index"]))
    metrics = benchmark_metrics(rows, ks)
    write_json_atomic(metrics_path(out_dir, name), {"settings": header, "metrics": metrics})
    return metrics


def score_rows(
    generated: Generated,
    records: list[Record],
    indices: list[int],
    kind: str,
    protocol: EvalProtocol,
    scorer: RewardScorer,
) -> list[dict[str, Any]]:
    """Score every sample of a batch in one scorer call and lay the rows out for the jsonl."""
    if len(generated.samples) != len(records):
        raise RuntimeError(f"generator returned {len(generated.samples)} problems for {len(records)}")
    flat = [(r, s) for r, samples in zip(records, generated.samples) for s in samples]
    truncated = [s.truncated for _, s in flat] if protocol.truncated_is_wrong else None
    result = scorer.score([s.text for _, s in flat], [r for r, _ in flat], truncated=truncated)
    rows, k = [], 0
    for index, record, prompt, samples in zip(indices, records, generated.prompts, generated.samples):
        out_samples = []
        for s in samples:
            out_samples.append(
                {
                    "response": s.text,
                    "extracted": _extract(s.text, record, kind),
                    "correct": float(result.accuracy[k]),
                    "num_tokens": s.num_tokens,
                    "truncated": s.truncated,
                    "timed_out": bool(result.timed_out[k]),
                    "error": s.error,
                }
            )
            k += 1
        rows.append(
            {
                "index": index,
                "id": record.id,
                "prompt": prompt,
                "answer": record.answer,
                "choices": record.choices,
                "samples": out_samples,
            }
        )
    return rows
