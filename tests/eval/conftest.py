"""The evaluation tests' own fixture (the shared ones are in tests/conftest.py): one torch thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core box: intra-op threads only spin against each other
    (a 4 x 128 matmul goes from microseconds to ~10 ms), so generation runs on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
