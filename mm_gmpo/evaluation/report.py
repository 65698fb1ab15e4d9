"""Summaries and paper-shaped tables from evaluation output folders.

A run folder holds ``<benchmark>.metrics.json`` files (see :mod:`mm_gmpo.evaluation.runner`).
:func:`collect_run` reads them into a :class:`RunSummary`; :func:`markdown_table` lays several
runs out like the paper's Table 1: one row per checkpoint, one column per benchmark (the
paper's titles, registry order) and the plain average of the row ("Avg."), in percent with one
decimal. Only finished benchmarks count: a partial ``.jsonl`` never reaches a table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_gmpo.evaluation.benchmarks import BENCHMARKS, benchmark_order
from mm_gmpo.evaluation.metrics import average
from mm_gmpo.evaluation.runner import write_json_atomic

SUMMARY_FILE = "summary.json"
TABLE_FILE = "table.md"
METRICS_SUFFIX = ".metrics.json"


@dataclass
class RunSummary:
    """Finished benchmarks of one run folder: name -> {"settings", "metrics"}."""

    label: str
    folder: Path
    benchmarks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def value(self, name: str, metric: str) -> float | None:
        entry = self.benchmarks.get(name)
        if entry is None:
            return None
        v = entry["metrics"].get(metric)
        return float(v) if isinstance(v, int | float) else None

    def title(self, name: str) -> str:
        entry = self.benchmarks.get(name)
        if entry is not None and entry["settings"].get("title"):
            return str(entry["settings"]["title"])
        return BENCHMARKS[name].title if name in BENCHMARKS else name

    def protocols(self) -> dict[str, dict[str, Any]]:
        return {n: e["settings"]["protocol"] for n, e in self.benchmarks.items()}

    def to_dict(self, metric: str = "pass@1") -> dict[str, Any]:
        names = benchmark_order(list(self.benchmarks))
        models = sorted({str(e["settings"].get("model")) for e in self.benchmarks.values()})
        return {
            "label": self.label,
            "model": models[0] if len(models) == 1 else models,
            "metric": metric,
            "benchmarks": {
                n: {
                    "title": self.title(n),
                    metric: self.value(n, metric),
                    "metrics": self.benchmarks[n]["metrics"],
                    "protocol": self.benchmarks[n]["settings"]["protocol"],
                    "source": self.benchmarks[n]["settings"].get("source"),
                    "backend": self.benchmarks[n]["settings"].get("backend"),
                }
                for n in names
            },
            "average": {metric: average(v for n in names if (v := self.value(n, metric)) is not None)},
        }


def collect_run(folder: str | Path, label: str | None = None) -> RunSummary:
    """Every finished benchmark in ``folder``; the label defaults to the one saved in the
    folder's summary, else the folder's name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not an evaluation output folder")
    if label is None:
        saved = folder / SUMMARY_FILE
        if saved.exists():
            label = json.loads(saved.read_text(encoding="utf-8")).get("label")
    run = RunSummary(label or folder.resolve().name, folder)
    for path in sorted(folder.glob(f"*{METRICS_SUFFIX}")):
        done = json.loads(path.read_text(encoding="utf-8"))
        run.benchmarks[path.name[: -len(METRICS_SUFFIX)]] = done
    if not run.benchmarks:
        raise FileNotFoundError(f"{folder}: no finished benchmark (*{METRICS_SUFFIX}) inside")
    return run


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def markdown_table(
    runs: list[RunSummary], metric: str = "pass@1", benchmarks: list[str] | None = None
) -> str:
    """The paper's table shape: rows = runs, columns = benchmarks + "Avg.".

    Avg. is the plain mean over the row's benchmarks. A row that misses a column averages what
    it has and is marked with † (a footnote says so), since that average is not comparable.
    A caption names the metric and the protocol(s).
    """
    if not runs:
        raise ValueError("no runs to tabulate")
    names = benchmark_order(benchmarks or sorted({n for r in runs for n in r.benchmarks}))
    titles = [next((r.title(n) for r in runs if n in r.benchmarks), n) for n in names]
    lines = [
        "| Model | " + " | ".join(titles) + " | Avg. |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    partial = False
    for run in runs:
        values = [run.value(n, metric) for n in names]
        avg = average(v for v in values if v is not None)
        mark = ""
        if any(v is None for v in values) and avg is not None:
            mark, partial = "†", True
        cells = [_pct(v) for v in values] + [_pct(avg) + mark]
        lines.append(f"| {run.label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(_caption(runs, names, metric))
    if partial:
        lines.append("† averaged over the benchmarks this row has; not comparable to full rows.")
    return "\n".join(lines) + "\n"


def _caption(runs: list[RunSummary], names: list[str], metric: str) -> str:
    """Metric, protocol(s) and subset sizes; per row only where rows differ."""
    from mm_gmpo.evaluation.benchmarks import EvalProtocol

    def protocol_of(run: RunSummary) -> str:
        by_desc: dict[str, list[str]] = {}
        for n in names:
            if n in run.benchmarks:
                desc = EvalProtocol(**run.benchmarks[n]["settings"]["protocol"]).describe()
                by_desc.setdefault(desc, []).append(run.title(n))
        if len(by_desc) == 1:
            return next(iter(by_desc))
        return "; ".join(f"{', '.join(titles)}: {desc}" for desc, titles in by_desc.items())

    def subsets_of(run: RunSummary) -> str:
        parts = []
        for n in names:
            size = BENCHMARKS[n].size if n in BENCHMARKS else None
            if n in run.benchmarks and size and run.benchmarks[n]["metrics"]["problems"] != size:
                parts.append(f"{run.title(n)} {run.benchmarks[n]['metrics']['problems']}/{size}")
        return ", ".join(parts)

    protocols = [protocol_of(r) for r in runs]
    subsets = [subsets_of(r) for r in runs]
    if len(set(protocols)) == 1:
        text = f"{metric} (%); {protocols[0]}."
    else:
        text = (
            f"{metric} (%). Protocols: "
            + " | ".join(f"{r.label}: {p}" for r, p in zip(runs, protocols))
            + "."
        )
    if any(subsets):
        if len(set(subsets)) == 1:
            text += f" Subsets only (problems used/total): {subsets[0]}."
        else:
            text += (
                " Subsets only (problems used/total): "
                + " | ".join(f"{r.label}: {s}" for r, s in zip(runs, subsets) if s)
                + "."
            )
    return text


def write_run_outputs(
    folder: str | Path, label: str | None = None, metric: str = "pass@1"
) -> tuple[Path, Path]:
    """``summary.json`` and ``table.md`` (this run alone) in the run folder."""
    run = collect_run(folder, label)
    summary = Path(folder) / SUMMARY_FILE
    table = Path(folder) / TABLE_FILE
    write_json_atomic(summary, run.to_dict(metric))
    table.write_text(markdown_table([run], metric), encoding="utf-8")
    return summary, table


def compare(
    folders: list[str | Path],
    labels: list[str] | None = None,
    metric: str = "pass@1",
    benchmarks: list[str] | None = None,
) -> str:
    """One table for several run folders (e.g. GRPO vs GMPO), rows in the order given."""
    if labels is not None and len(labels) != len(folders):
        raise ValueError(f"{len(labels)} labels for {len(folders)} folders")
    runs = [collect_run(f, labels[i] if labels else None) for i, f in enumerate(folders)]
    return markdown_table(runs, metric, benchmarks)
