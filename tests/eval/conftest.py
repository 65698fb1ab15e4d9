"""Fixtures for the evaluation tests: shared data, long-lived scorers, one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mm_gmpo.data.loaders import default_data_dir
from mm_gmpo.rewards import RewardScorer


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core box: intra-op threads only spin against each other
    (a 4 x 128 matmul goes from microseconds to ~10 ms), so generation runs on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = default_data_dir()
    if not (root / "math").is_dir():
        pytest.fail(f"shared data not found at {root} (set MM_GMPO_DATA_DIR)")
    return root


@pytest.fixture(scope="session")
def math_scorer():
    with RewardScorer("math", timeout_s=5.0, num_workers=2) as scorer:
        yield scorer


@pytest.fixture(scope="session")
def geometry_scorer():
    with RewardScorer("geometry", timeout_s=5.0, num_workers=2) as scorer:
        yield scorer
