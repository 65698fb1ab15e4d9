"""Shared fixtures: the data folder beside the repo and long-lived scorers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mm_gmpo.rewards import RewardScorer


def data_dir() -> Path:
    """<repo>/../shared/data, or $MM_GMPO_DATA_DIR."""
    env = os.environ.get("MM_GMPO_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = data_dir()
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
