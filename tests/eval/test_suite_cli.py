"""The whole math suite (and the VL script) on CPU with tiny random models and --limit 4."""

from __future__ import annotations

import json
import os

import pytest

from mm_gmpo.evaluation.benchmarks import MATH_BENCHMARKS
from mm_gmpo.evaluation.cli import MATH_SUITE, build_suite_parser, main_geometry, main_math_suite, main_tables
from mm_gmpo.evaluation.runner import read_predictions
from mm_gmpo.testing import tiny_model_dir


def test_math_suite_end_to_end_writes_every_output(tmp_path, data_root, capsys):
    out = tmp_path / "tiny"
    argv = [
        "--model",
        str(tiny_model_dir("qwen2")),
        "--out",
        str(out),
        "--label",
        "tiny-random",
        "--limit",
        "4",
        "--max-new-tokens",
        "6",
        "--backend",
        "hf",
        "--batch-size",
        "3",
        "--no-progress",
    ]
    assert main_math_suite(argv) == 0
    for bench in MATH_BENCHMARKS:
        header, rows = read_predictions(out / f"{bench.name}.jsonl")
        assert header["protocol"]["temperature"] == 0.0 and header["protocol"]["template"] == "qwen_math"
        assert [r["index"] for r in rows] == [0, 1, 2, 3]
        for r in rows:
            assert "<|im_start|>assistant" in r["prompt"]  # the qwen_math chat prompt as the model saw it
            assert "Please reason step by step" in r["prompt"]
            (s,) = r["samples"]
            assert 1 <= s["num_tokens"] <= 6
            assert s["truncated"] == (s["num_tokens"] == 6 and not s["response"].endswith("<|im_end|>"))
            assert s["correct"] in (0.0, 1.0) and "extracted" in s and isinstance(s["response"], str)
        assert (out / f"{bench.name}.metrics.json").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["benchmarks"]) == [b.name for b in MATH_BENCHMARKS]
    table = (out / "table.md").read_text()
    assert table.splitlines()[0] == "| Model | AIME24 | AMC | MATH500 | Minerva | OlympiadBench | Avg. |"
    assert table.splitlines()[2].startswith("| tiny-random |")
    assert "AIME24 4/30" in table  # the caption says these are subsets

    # a second run skips everything (nothing regenerated: predictions unchanged on disk)
    stamp = {p.name: os.stat(p).st_mtime_ns for p in out.glob("*.jsonl")}
    capsys.readouterr()
    assert main_math_suite(argv) == 0
    assert {p.name: os.stat(p).st_mtime_ns for p in out.glob("*.jsonl")} == stamp
    assert "| tiny-random |" in capsys.readouterr().out

    # sampling protocol: avg@2 / pass@2 on one benchmark, into another folder, compared in one table
    out2 = tmp_path / "tiny_t1"
    argv2 = [
        "--model",
        str(tiny_model_dir("qwen2")),
        "--out",
        str(out2),
        "--benchmarks",
        "aime24",
        "--limit",
        "2",
        "--max-new-tokens",
        "4",
        "--temperature",
        "1.0",
        "--n",
        "2",
        "--backend",
        "hf",
        "--no-progress",
    ]
    assert main_math_suite(argv2) == 0
    _, rows = read_predictions(out2 / "aime24.jsonl")
    assert [len(r["samples"]) for r in rows] == [2, 2]
    metrics = json.loads((out2 / "aime24.metrics.json").read_text())["metrics"]
    assert {"pass@1", "avg@2", "pass@2"} <= set(metrics)
    md = tmp_path / "compare.md"
    assert main_tables(["--compare", str(out), str(out2), "--out", str(md)]) == 0
    lines = md.read_text().splitlines()
    assert lines[2].startswith("| tiny-random |") and lines[3].startswith("| tiny_t1 |")
    assert lines[3].endswith("| 0.0† |")  # a partial row: averaged over what it has, marked


def test_geometry_script_on_tiny_vl_model(tmp_path, data_root):
    out = tmp_path / "vl"
    argv = [
        "--model",
        str(tiny_model_dir("qwen2_5_vl")),
        "--out",
        str(out),
        "--benchmarks",
        "mathvision",
        "--limit",
        "2",
        "--n",
        "2",
        "--max-new-tokens",
        "4",
        "--backend",
        "hf",
        "--no-progress",
    ]
    assert main_geometry(argv) == 0
    header, rows = read_predictions(out / "mathvision.jsonl")
    assert header["protocol"]["temperature"] == 0.5 and header["protocol"]["template"] == "geometry"
    assert len(rows) == 2 and all(len(r["samples"]) == 2 for r in rows)
    assert all("<|vision_start|><|image_pad|>x" in r["prompt"] for r in rows)  # the image went in
    assert "| Model | MathVision | Avg. |" in (out / "table.md").read_text()


def test_missing_geometry3k_data_is_a_clear_error(tmp_path, capsys):
    code = main_geometry(
        ["--model", "unused", "--out", str(tmp_path), "--data-dir", str(tmp_path), "--backend", "hf"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # one line: what is missing and the ways out
    assert "geometry3k/test.parquet not found" in err and "data_prep geometry3k" in err
    assert "hiyouga/geometry3k@test" in err and "--benchmarks mathvision" in err


def test_mathvision_runs_on_the_shipped_data_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MM_GMPO_DATA_DIR", raising=False)
    out = tmp_path / "mv"
    argv = ["--backend", "ground-truth", "--benchmarks", "mathvision", "--limit", "6", "--n", "1"]
    assert main_geometry([*argv, "--out", str(out), "--no-progress"]) == 0
    header, rows = read_predictions(out / "mathvision.jsonl")
    assert header["source"].endswith("mathvision/testmini.jsonl") and len(rows) == 6
    assert "| mv | 100.0 | 100.0 |" in capsys.readouterr().out


def test_wrong_suite_and_backend_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="another suite"):
        main_math_suite(
            ["--model", "x", "--out", str(tmp_path), "--benchmarks", "geometry3k", "--backend", "hf"]
        )
    args = build_suite_parser(MATH_SUITE, "t").parse_args(["--out", str(tmp_path)])
    assert (
        args.temperature == 0.0
        and args.n == 1
        and args.max_new_tokens == 3000
        and args.template == "qwen_math"
    )


def test_data_override_and_ground_truth_backend(tmp_path):
    src = tmp_path / "my_aime.jsonl"
    rows = [{"problem": f"What is {i} squared?", "answer": str(i * i)} for i in range(3)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ceiling"
    argv = ["--backend", "ground-truth", "--out", str(out), "--benchmarks", "AIME24", "--data", f"aime={src}"]
    assert main_math_suite([*argv, "--no-progress"]) == 0
    header, got = read_predictions(out / "aime24.jsonl")
    assert header["source"] == str(src) and header["model"] == "ground-truth"
    assert [r["answer"] for r in got] == ["0", "1", "4"]
    assert json.loads((out / "summary.json").read_text())["average"]["pass@1"] == 1.0


@pytest.mark.parametrize("suite", ["math", "geometry"])
def test_help_states_each_default_once(suite, capsys):
    from mm_gmpo.cli import main

    with pytest.raises(SystemExit):
        main(["eval", suite, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert text.count("(default: the --out folder's name)") == 1
    assert text.count("(default: $MM_GMPO_DATA_DIR") == 1
    assert "(default: 1.0)" in text  # a real default is still shown (--top-p)
