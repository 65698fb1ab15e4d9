"""Tables and summaries from fixed prediction files: exact expected numbers and layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mm_gmpo.evaluation.benchmarks import MATH_PROTOCOL, VL_PROTOCOL
from mm_gmpo.evaluation.report import collect_run, compare, write_run_outputs
from mm_gmpo.evaluation.runner import finalize_predictions

REPO = Path(__file__).resolve().parents[2]


def write_predictions(
    folder: Path, name: str, title: str, verdicts: list[list[int]], protocol=MATH_PROTOCOL
) -> None:
    """A predictions file as the runner writes it: header, then one row per problem."""
    folder.mkdir(parents=True, exist_ok=True)
    header = {
        "benchmark": name,
        "title": title,
        "kind": "math",
        "model": f"ckpt-{folder.name}",
        "backend": "hf",
        "protocol": protocol.to_dict(),
        "num_problems": len(verdicts),
        "ids_sha1": "fixed",
        "source": "fixed",
    }
    lines = [{"header": header}]
    for i, vs in enumerate(verdicts):
        samples = [
            {
                "response": f"\\boxed{{{v}}}",
                "extracted": str(v),
                "correct": float(v),
                "num_tokens": 7,
                "truncated": False,
            }
            for v in vs
        ]
        lines.append(
            {
                "index": i,
                "id": f"{name}-{i}",
                "prompt": "q",
                "answer": "1",
                "choices": None,
                "samples": samples,
            }
        )
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    grpo, gmpo = tmp_path / "grpo", tmp_path / "gmpo"
    write_predictions(grpo, "aime24", "AIME24", [[1], [0], [0], [0]])  # 25.0
    write_predictions(grpo, "amc23", "AMC", [[1], [1], [1], [0]])  # 75.0
    write_predictions(gmpo, "aime24", "AIME24", [[1], [1], [0], [0]])  # 50.0
    write_predictions(gmpo, "amc23", "AMC", [[1], [1], [1], [1]])  # 100.0
    write_predictions(gmpo, "math500", "MATH500", [[0], [1]])  # 50.0
    for folder in (grpo, gmpo):
        for f in folder.glob("*.jsonl"):
            finalize_predictions(folder, f.stem)
    return grpo, gmpo


EXPECTED = """\
| Model | AIME24 | AMC | MATH500 | Avg. |
|---|---:|---:|---:|---:|
| GRPO | 25.0 | 75.0 | – | 50.0† |
| GMPO | 50.0 | 100.0 | 50.0 | 66.7 |

pass@1 (%); greedy, 1 sample, max 3000 new tokens, qwen_math prompt. Subsets only (problems used/total): GRPO: AIME24 4/30, AMC 4/83 | GMPO: AIME24 4/30, AMC 4/83, MATH500 2/500.
† averaged over the benchmarks this row has; not comparable to full rows.
"""


def test_compare_table_exact(two_runs):
    grpo, gmpo = two_runs
    assert compare([grpo, gmpo], labels=["GRPO", "GMPO"]) == EXPECTED


def test_summary_json_numbers(two_runs):
    _, gmpo = two_runs
    summary_path, table_path = write_run_outputs(gmpo, label="GMPO")
    summary = json.loads(summary_path.read_text())
    assert summary["label"] == "GMPO"
    assert summary["model"] == "ckpt-gmpo"
    assert list(summary["benchmarks"]) == ["aime24", "amc23", "math500"]  # the paper's column order
    assert summary["benchmarks"]["aime24"]["pass@1"] == pytest.approx(0.5)
    assert summary["average"]["pass@1"] == pytest.approx(2 / 3)
    assert "| GMPO | 50.0 | 100.0 | 50.0 | 66.7 |" in table_path.read_text()
    # the saved label is what a later comparison shows by default
    assert collect_run(gmpo).label == "GMPO"


def test_unfinished_file_is_refused_and_never_tabulated(tmp_path):
    run = tmp_path / "run"
    write_predictions(run, "aime24", "AIME24", [[1], [0]])
    lines = (run / "aime24.jsonl").read_text().splitlines(keepends=True)
    (run / "aime24.jsonl").write_text("".join(lines[:-1]))  # problem 1 missing
    with pytest.raises(ValueError, match="not finished"):
        finalize_predictions(run, "aime24")
    with pytest.raises(FileNotFoundError, match="no finished benchmark"):
        collect_run(run)


def test_vl_metric_columns_and_caption(tmp_path):
    run = tmp_path / "vl"
    write_predictions(run, "geometry3k", "Geometry3K", [[1, 0, 1, 1], [0, 0, 0, 1]], protocol=VL_PROTOCOL)
    finalize_predictions(run, "geometry3k")
    table = compare([run], labels=["GMPO-VL"])
    assert "| GMPO-VL | 50.0 | 50.0 |" in table  # (3/4 + 1/4) / 2
    assert "temperature 0.5, top-p 1, 16 samples, max 2048 new tokens, geometry prompt" in table
    # pass@2: (1 + (1 - C(3,2)/C(4,2))) / 2 = (1 + 1/2) / 2
    assert "| GMPO-VL | 75.0 | 75.0 |" in compare([run], labels=["GMPO-VL"], metric="pass@2")


def test_tables_script_writes_the_table(two_runs, tmp_path):
    grpo, gmpo = two_runs
    out = tmp_path / "table.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "eval" / "tables.py"),
            "--compare",
            str(grpo),
            str(gmpo),
            "--labels",
            "GRPO",
            "GMPO",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == EXPECTED
    assert proc.stdout == EXPECTED
