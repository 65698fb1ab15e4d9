"""A plain install works on its own: build the wheel, install it into a fresh venv and run the
three commands a new user runs first, from a directory that is not the checkout.

The venv re-uses this environment's third-party packages (torch and the rest: installing them
again would take minutes and the network) through a path file, but not this environment's own
(editable) mm-gmpo: the commands must run the installed wheel, with its shipped configs and
data, and nothing from the repository. ``$PYTHONPATH`` and ``$MM_GMPO_DATA_DIR`` are removed
so neither can point back at the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What a wheel is built from; copied so the build leaves nothing in the checkout and cannot
# see anything beside it.
BUILD_INPUTS = ("pyproject.toml", "README.md", "mm_gmpo", "data_prep", "eval", "data", "configs")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        origin = REPO / name
        if origin.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(origin, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(origin, src / name)
    dist = src / "dist"
    proc = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(dist),
            ".",
        ],
        cwd=src,
    )
    # The license as an SPDX string: setuptools no longer prints its deprecation block.
    assert "Deprecat" not in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    (built,) = dist.glob("mm_gmpo-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(venv bin folder, environment, working directory outside the checkout)."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent)
    py = venv / "bin" / "python"
    # Install before the path file exists, so pip sees an empty environment and touches nothing else.
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=venv.parent)
    site = Path(
        _run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv.parent
        ).stdout.strip()
    )
    here = sysconfig.get_paths()
    # Plain directory lines: their own .pth files (this environment's editable mm-gmpo) stay unread.
    (site / "zz_reuse_parent_env.pth").write_text(
        "\n".join(dict.fromkeys([here["purelib"], here["platlib"]])) + "\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MM_GMPO_DATA_DIR")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg")
    work = tmp_path_factory.mktemp("elsewhere")
    out = _run([str(py), "-c", "import mm_gmpo, torch; print(mm_gmpo.__file__)"], cwd=work, env=env)
    assert Path(out.stdout.strip()).is_relative_to(venv), out.stdout  # the wheel, not the checkout
    return venv / "bin", env, work


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_wheel_carries_the_data_and_the_configs(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for suite in ("aime24", "amc23", "math500", "minerva_math", "olympiadbench", "math_lvl3to5_train"):
        assert f"mm_gmpo/_data/math/{suite}.jsonl" in names
    assert "mm_gmpo/_data/mathvision/testmini.jsonl" in names
    assert sum(n.startswith("mm_gmpo/_data/mathvision/images/") for n in names) == 304
    for config in ("demo_text.yaml", "demo_vl.yaml", "study_sorted.yaml", "paper_text_gmpo.yaml"):
        assert f"mm_gmpo/_configs/{config}" in names


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_eval_math_ground_truth_from_an_installed_wheel(installed) -> None:
    bin_dir, env, work = installed
    proc = _run(
        [
            str(bin_dir / "mm-gmpo"),
            "eval",
            "math",
            "--backend",
            "ground-truth",
            "--out",
            "ceiling",
            "--no-progress",
        ],
        cwd=work,
        env=env,
    )
    assert "| ceiling | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |" in proc.stdout, proc.stdout[-2000:]
    assert (work / "ceiling" / "summary.json").is_file()
    # The data came from the package: the header of each prediction file names its source.
    header = (work / "ceiling" / "aime24.jsonl").read_text(encoding="utf-8").split("\n", 1)[0]
    assert str(bin_dir.parent) in header and "_data/math/aime24.jsonl" in header, header


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_from_an_installed_wheel(installed) -> None:
    bin_dir, env, work = installed
    shrink = [
        "train.steps=1",
        "warm_start.steps=1",
        "data.synthetic_eval_size=8",
        "train.save_every=0",
        "train.progress=false",
        "train.log_tensorboard=false",
    ]
    proc = _run([str(bin_dir / "mm-gmpo"), "demo", "--output-dir", "demo", *shrink], cwd=work, env=env)
    assert "[demo] text seed 0: held-out accuracy" in proc.stdout, proc.stdout[-2000:]
    assert (work / "demo" / "seed0" / "summary.json").is_file()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_study_from_an_installed_wheel(installed) -> None:
    bin_dir, env, work = installed
    shrink = ["--losses", "gmpo", "--steps", "1", "--eval-limit", "8", "warm_start.steps=1"]
    proc = _run([str(bin_dir / "mm-gmpo"), "study", "--quick", *shrink], cwd=work, env=env, timeout=1200)
    report = work / "runs" / "stability_quick" / "report" / "REPORT.md"
    assert report.is_file(), proc.stdout[-2000:]
    text = report.read_text(encoding="utf-8")
    for task in ("text", "vl", "sorted"):  # every shipped demo config was found through the package
        assert f"| {task} | gmpo |" in text, text[-2000:]
