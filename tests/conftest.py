"""Fixtures every test folder shares: the shipped data folder and long-lived scorers.

The data ships in the repository (``data/``), so a missing folder is a failure, never a skip:
a test that quietly skipped here would hide a broken checkout or a broken package.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mm_gmpo.data.loaders import default_data_dir
from mm_gmpo.rewards import RewardScorer

# Files the tests read from the data folder; each must be there.
SHIPPED = (
    "math/aime24.jsonl",
    "math/amc23.jsonl",
    "math/math500.jsonl",
    "math/minerva_math.jsonl",
    "math/olympiadbench.jsonl",
    "math/math_lvl3to5_train.jsonl",
    "mathvision/testmini.jsonl",
    "mathvision/images",
)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data folder the code resolves (``$MM_GMPO_DATA_DIR``, else the repository's ``data/``)."""
    try:
        root = default_data_dir()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    missing = [name for name in SHIPPED if not (root / name).exists()]
    if missing:
        pytest.fail(f"data folder {root} lacks {', '.join(missing)} (the repository ships them in data/)")
    return root


@pytest.fixture(scope="session")
def math_scorer():
    with RewardScorer("math", timeout_s=5.0, num_workers=2) as scorer:
        yield scorer


@pytest.fixture(scope="session")
def geometry_scorer():
    with RewardScorer("geometry", timeout_s=5.0, num_workers=2) as scorer:
        yield scorer
