"""Shared fixtures: the data folder beside the repo and long-lived scorers."""

from __future__ import annotations

from pathlib import Path

import pytest

from mm_gmpo.data.loaders import default_data_dir
from mm_gmpo.rewards import RewardScorer


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = default_data_dir()
    if not (root / "math").is_dir():
        pytest.fail(f"shared data not found at {root} (set MM_GMPO_DATA_DIR)")
    return root


@pytest.fixture(scope="session")
def math_scorer():
    with RewardScorer("math", timeout_s=3.0, num_workers=2) as scorer:
        yield scorer


@pytest.fixture(scope="session")
def geometry_scorer():
    with RewardScorer("geometry", timeout_s=3.0, num_workers=2) as scorer:
        yield scorer
