"""Geometry3K: synthetic releases in both published layouts must give the same records.

The fixtures are written in exactly the two layouts (Inter-GPS problem folders; the EasyR1 /
verl parquet with an HF image feature) from one list of made-up problems, with the id ranges
of the real release (train from 0, validation from 2101, test from 2401).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep import geometry3k
from data_prep.__main__ import main
from data_prep.common import DataFormatError
from mm_gmpo.data.record_io import read_records

SPLIT_IDS = {"train": [0, 1, 2], "validation": [2101, 2102], "test": [2401, 2402, 2403]}
FOLDER = {"train": "train", "validation": "val", "test": "test"}


def _problems(images) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for split, ids in SPLIT_IDS.items():
        out[split] = []
        for n in ids:
            letter = "ABCD"[n % 4]
            choices = [f"{n + k}" for k in range(3)] + [f"{n} \\sqrt {{ 3 }}"]
            text = (
                f"Find  x in triangle {n}.\nRound to the nearest tenth."
                if n % 2
                else f"Find y for figure {n}."
            )
            out[split].append(
                {
                    "id": n,
                    "problem_text": text,
                    "choices": choices,
                    "answer": letter,
                    "precise_value": [float(n), n + 1.0, n + 2.0, n * 1.732],
                    "compact_text": f"Find x. ({n})",
                    "compact_choices": choices,
                    "annot_id": f"annotator_{n}",
                    "image": images.png((60 + n % 7, 40), (n % 256, 50, 90)),
                }
            )
    return out


def _write_folders(root: Path, problems: dict[str, list[dict]]) -> Path:
    for split, items in problems.items():
        for p in items:
            folder = root / FOLDER[split] / str(p["id"])
            folder.mkdir(parents=True)
            data = {k: v for k, v in p.items() if k != "image"}
            (folder / "data.json").write_text(json.dumps(data, indent=2))
            (folder / "img_diagram.png").write_bytes(p["image"])
    (root / "train" / ".DS_Store").write_bytes(b"junk")  # stray files must be ignored
    return root


def _write_parquet(root: Path, problems: dict[str, list[dict]], naming: str) -> Path:
    import datasets

    features = datasets.Features(
        {
            "images": datasets.List(datasets.Image()),
            "problem": datasets.Value("string"),
            "answer": datasets.Value("string"),
        }
    )
    for split, items in problems.items():
        rows = {
            "images": [[{"bytes": p["image"], "path": None}] for p in items],
            "problem": ["<image>" + p["problem_text"] for p in items],
            "answer": [p["choices"]["ABCD".index(p["answer"])] for p in items],
        }
        path = (
            root / "data" / f"{split}-00000-of-00001.parquet"
            if naming == "hub"
            else root / f"{split}.parquet"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return root


@pytest.fixture
def problems(images):
    return _problems(images)


@pytest.fixture
def folders(tmp_path, problems) -> Path:
    return _write_folders(tmp_path / "geometry3k_intergps", problems)


@pytest.fixture(params=["hub", "flat"])
def parquet_release(request, tmp_path, problems) -> Path:
    return _write_parquet(tmp_path / f"geometry3k_parquet_{request.param}", problems, request.param)


SHARED_FIELDS = ("id", "problem", "answer", "images", "source", "split")


def test_both_layouts_give_the_same_records(folders, parquet_release, problems):
    assert geometry3k.detect_layout(folders) == "folders"
    assert geometry3k.detect_layout(parquet_release) == "parquet"
    a = geometry3k.convert(folders)
    b = geometry3k.convert(parquet_release)
    assert list(a) == list(b) == ["train", "validation", "test"]
    for split in a:
        assert len(a[split]) == len(b[split]) == len(problems[split])
        for ra, rb in zip(a[split], b[split], strict=True):
            assert {f: getattr(ra, f) for f in SHARED_FIELDS} == {f: getattr(rb, f) for f in SHARED_FIELDS}
            assert rb.choices is None and rb.metadata == {"layout": "parquet"}


def test_canonical_record_contents(folders, problems):
    rec = geometry3k.convert(folders)["validation"][0]
    src = problems["validation"][0]  # id 2101, answer letter "B", odd id: messy whitespace
    assert rec.id == "geometry3k-2101" and rec.split == "validation" and rec.source == "geometry3k"
    assert rec.problem == "<image>Find x in triangle 2101. Round to the nearest tenth."
    assert rec.answer == "2102" == src["choices"][1]  # the value text, not the letter
    assert rec.choices == ["2101", "2102", "2103", "2101 \\sqrt { 3 }"]
    assert rec.images == [src["image"]]
    assert rec.metadata["answer_letter"] == "B"
    assert rec.metadata["answer_precise_value"] == 2102.0
    assert rec.metadata["compact_text"] == "Find x. (2101)"
    assert "annot_id" not in rec.metadata


def test_parquet_ids_follow_split_offsets(parquet_release):
    out = geometry3k.convert(parquet_release)
    assert {s: [r.id for r in recs] for s, recs in out.items()} == {
        s: [f"geometry3k-{n}" for n in ids] for s, ids in SPLIT_IDS.items()
    }


def test_cli_writes_one_file_per_split(folders, tmp_path):
    out = tmp_path / "out"
    assert main(["geometry3k", str(folders), "--out-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test.parquet", "train.parquet", "validation.parquet"]
    assert read_records(out / "train.parquet") == geometry3k.convert(folders)["train"]


def _fails_cleanly(src: Path, tmp_path: Path, *match: str, capsys) -> None:
    """Conversion refused: exit 2, message names file and field, no output at all."""
    out = tmp_path / "out_bad"
    assert main(["geometry3k", str(src), "--out-dir", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    for m in match:
        assert m in err, (m, err)
    assert not out.exists() or not any(out.iterdir())


def test_missing_field_named(folders, tmp_path, capsys):
    bad = folders / "test" / "2402" / "data.json"
    data = json.loads(bad.read_text())
    del data["problem_text"]
    bad.write_text(json.dumps(data))
    _fails_cleanly(folders, tmp_path, "2402/data.json", "'problem_text'", "missing", capsys=capsys)


def test_corrupt_image_named(folders, tmp_path, images, capsys):
    (folders / "test" / "2403" / "img_diagram.png").write_bytes(images.png()[:40])
    _fails_cleanly(folders, tmp_path, "2403/img_diagram.png", "unreadable", capsys=capsys)


def test_bad_answer_letter_named(folders):
    bad = folders / "train" / "1" / "data.json"
    bad.write_text(json.dumps({**json.loads(bad.read_text()), "answer": "E"}))
    with pytest.raises(DataFormatError, match=r"train/1/data\.json: field 'answer'"):
        geometry3k.convert(folders)


def test_id_must_match_folder(folders):
    bad = folders / "train" / "2" / "data.json"
    bad.write_text(json.dumps({**json.loads(bad.read_text()), "id": 7}))
    with pytest.raises(DataFormatError, match="does not match its folder"):
        geometry3k.convert(folders)


def test_wrong_parquet_columns_named(tmp_path, problems, capsys):
    import pyarrow.parquet as pq

    root = _write_parquet(tmp_path / "pq", problems, "flat")
    table = pq.read_table(root / "test.parquet")
    pq.write_table(table.rename_columns(["images", "question", "answer"]), root / "test.parquet")
    _fails_cleanly(root, tmp_path, "test.parquet", "'problem'", "found columns", capsys=capsys)


def test_failure_keeps_previous_output(folders, tmp_path):
    out = tmp_path / "out"
    assert main(["geometry3k", str(folders), "--out-dir", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (folders / "val" / "2101" / "img_diagram.png").unlink()
    assert main(["geometry3k", str(folders), "--out-dir", str(out)]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ------------------------------------------- every published form, by path or hub id, where it is read


@pytest.fixture
def offline_hub(tmp_path, problems, monkeypatch):
    """``datasets.load_dataset("hiyouga/geometry3k", ...)`` served from a local copy of the hub
    layout (the tests never reach the hub): the same parquet files the hub holds."""
    import datasets

    root = _write_parquet(tmp_path / "hub_copy", problems, "hub")
    files = {s: str(p[0]) for s, p in geometry3k.find_parquet_files(root).items()}
    real = datasets.load_dataset
    asked: list[tuple[str, str | None]] = []

    def load_dataset(path, name=None, split=None, **kwargs):
        if path != geometry3k.HUB_ID:
            return real(path, name, split=split, **kwargs)
        asked.append((path, split))
        return real("parquet", data_files=files, split=split)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # the local copy stands for datasets' own cache
    return asked


def _common_fields(records) -> list[dict]:
    return [{f: getattr(r, f) for f in SHARED_FIELDS} for r in records]


def test_hub_id_gives_the_converted_records(folders, offline_hub):
    expected = geometry3k.convert(folders)
    for split in ("train", "validation", "test"):
        assert _common_fields(geometry3k.read_hub(geometry3k.HUB_ID, split)) == _common_fields(
            expected[split]
        )
    assert offline_hub == [(geometry3k.HUB_ID, s) for s in ("train", "validation", "test")]


def test_eval_reads_geometry3k_in_every_form(folders, offline_hub, tmp_path):
    """``eval geometry``'s source: a converted file, the unpacked release, or the hub id
    (test split by default, ``@split`` for another) all give the same records."""
    from mm_gmpo.evaluation.benchmarks import get_benchmark, load_benchmark

    bench = get_benchmark("geometry3k")
    converted = tmp_path / "data" / "geometry3k"
    assert main(["geometry3k", str(folders), "--out-dir", str(converted)]) == 0
    expected = _common_fields(geometry3k.convert(folders)["test"])
    for source in (converted / "test.parquet", folders, "hiyouga/geometry3k", "hiyouga/geometry3k@test"):
        _, records = load_benchmark(bench, tmp_path / "no_data_dir", str(source))
        assert _common_fields(records) == expected, source
    _, validation = load_benchmark(bench, tmp_path, "hiyouga/geometry3k@validation")
    assert [r.id for r in validation] == ["geometry3k-2101", "geometry3k-2102"]
    # The default path (data/geometry3k/test.parquet under the data folder) is the converted file.
    _, default = load_benchmark(bench, tmp_path / "data")
    assert _common_fields(default) == expected


def test_vl_recipe_trains_from_the_hub_id_or_the_converted_file(folders, offline_hub, tmp_path, monkeypatch):
    """``data.train`` of the VL recipe: the converted file under the data folder (the config's
    own relative path) or ``hiyouga/geometry3k@train``, read by the trainer's loader."""
    from mm_gmpo.data.loaders import load_records_with_report
    from mm_gmpo.resources import config_path
    from mm_gmpo.train.config import load_config

    def load_records(source: str, cfg) -> list:  # as the trainer reads data.train
        keys = {"question_key": cfg.data.question_key, "answer_key": cfg.data.answer_key}
        return load_records_with_report(source, **keys, on_bad_record=cfg.data.on_bad_record).records

    assert main(["geometry3k", str(folders), "--out-dir", str(tmp_path / "data" / "geometry3k")]) == 0
    monkeypatch.setenv("MM_GMPO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path / "data" / "geometry3k")  # not where the config's path starts
    expected = geometry3k.convert(folders)["train"]
    recipe = config_path("paper_vl_gmpo_geo3k.yaml")
    cfg = load_config(recipe)
    assert cfg.data.train == "geometry3k/train.parquet"
    assert _common_fields(load_records(cfg.data.train, cfg)) == _common_fields(expected)

    cfg = load_config(recipe, ["data.train=hiyouga/geometry3k@train"])
    records = load_records(cfg.data.train, cfg)
    assert offline_hub[-1] == (geometry3k.HUB_ID, "train")
    # The hub rows as published: the same diagrams and answers, one <image> per problem.
    assert [(r.images, r.answer) for r in records] == [(r.images, r.answer) for r in expected]
    assert all(r.problem.count("<image>") == 1 for r in records)
