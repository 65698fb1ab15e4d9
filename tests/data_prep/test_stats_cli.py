"""`stats` numbers, and the command line: every subcommand answers --help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.__main__ import main
from data_prep.stats import answer_type, compute_stats, vl_image_tokens
from mm_gmpo.data.record_io import write_records
from mm_gmpo.data.records import Record


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from mm_gmpo.testing import build_tokenizer

    path = build_tokenizer(tmp_path_factory.mktemp("tok"))
    return path, AutoTokenizer.from_pretrained(str(path))


def _text_records() -> list[Record]:
    return [
        Record(id="0", problem="What is 37 + 45?", answer="82"),
        Record(id="1", problem="Pick.", answer="B", choices=["1", "2"]),
        Record(id="2", problem="Half?", answer=["0.5", "1/2"]),
        Record(id="3", problem="Root?", answer="\\sqrt{2}"),
        Record(id="4", problem="x?", answer="-3.25"),
        Record(id="5", problem="Who? " + "zq " * 1500, answer="Euler"),
    ]


@pytest.mark.parametrize(
    ("size", "tokens"),
    [((28, 28), 4), ((56, 56), 4), ((560, 280), 200), ((5000, 5000), 1225)],
)
def test_vl_image_tokens(size, tokens):
    # 28x28 is lifted to the 4-token minimum; 560x280 is 20x10 blocks; 5000x5000 is cut to the
    # 1280-token budget (35x35 = 1225 blocks of 28 px).
    assert vl_image_tokens(*size) == tokens


def test_answer_types():
    assert [answer_type(r) for r in _text_records()] == [
        "integer",
        "letter",
        "list",
        "latex",
        "decimal",
        "text",
    ]


def test_text_prompt_lengths_against_text_limit(tokenizer):
    _, tok = tokenizer
    recs = _text_records()
    s = compute_stats(recs, tok)
    expected = [len(tok(r.problem, add_special_tokens=False)["input_ids"]) for r in recs]
    p = s["prompt_tokens"]
    assert p["paper_limits"] == "text" and p["limit"] == 1024 and p["response_limit"] == 3000
    assert p["max"] == max(expected) and p["min"] == min(expected)
    assert p["over_limit"] == sum(n > 1024 for n in expected) >= 1
    chat = compute_stats(recs, tok, chat=True)["prompt_tokens"]
    assert chat["min"] > p["min"]  # the template adds the system turn and role markers


def test_vl_prompt_counts_image_tokens(tokenizer, images):
    _, tok = tokenizer
    rec = Record(id="v", problem="<image>Find x.", answer="3", images=[images.png((560, 280))])
    s = compute_stats([rec], tok, prompt_limit=100)
    text = len(tok("Find x.", add_special_tokens=False)["input_ids"])
    assert s["prompt_tokens"]["max"] == text + 200 + 2
    assert s["prompt_tokens"]["paper_limits"] == "vl" and s["prompt_tokens"]["over_limit"] == 1
    assert s["images"]["width"]["max"] == 560 and s["images"]["longest_side"] == {"512-1023": 1}


def test_stats_cli_json(tokenizer, tmp_path, images):
    path, _ = tokenizer
    data = write_records(tmp_path / "d.parquet", _text_records())
    out = tmp_path / "stats.json"
    assert main(["stats", str(data), "--tokenizer", str(path), "--json", str(out)]) == 0
    report = json.loads(out.read_text())[str(data)]
    assert report["records"] == 6 and report["answer_types"]["list"] == 1


@pytest.mark.parametrize("command", ["geometry3k", "mathvision", "math", "validate-images", "stats"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_module_entry_point():
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "data_prep", "--help"], cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 0
    for command in ("geometry3k", "mathvision", "math", "validate-images", "stats"):
        assert command in done.stdout
