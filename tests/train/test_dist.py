"""The dist helpers behave as one rank of one without a launcher, with or without a group.

Multi-rank sums are checked by the two-rank DeepSpeed test (``rank_sum`` in its report).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as torch_dist

from mm_gmpo.testing.dist import DIST_ENV
from mm_gmpo.train import dist


@pytest.fixture
def no_launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in DIST_ENV:
        monkeypatch.delenv(key, raising=False)


def test_helpers_without_a_process_group(no_launcher_env: None) -> None:
    assert not torch_dist.is_initialized()
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    assert dist.all_reduce_sum(2.5) == 2.5
    t = torch.tensor([1.0, 2.0])
    summed = dist.all_reduce_sum(t)
    assert torch.equal(summed, t) and summed is not t
    dist.barrier()
    dist.shutdown()  # nothing to tear down: must not raise


def test_init_fills_single_process_defaults_and_is_idempotent(no_launcher_env: None) -> None:
    assert not torch_dist.is_initialized()
    try:
        dist.init_distributed()
        assert torch_dist.is_initialized() and torch_dist.get_backend() == "gloo"
        assert os.environ["RANK"] == "0" and os.environ["WORLD_SIZE"] == "1"
        assert int(os.environ["MASTER_PORT"]) > 0
        dist.init_distributed()  # second call: no error, same group
        assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
        assert dist.all_reduce_sum(3.0) == 3.0
        dist.barrier()
    finally:
        dist.shutdown()
    assert not torch_dist.is_initialized()


def test_free_port_is_bindable() -> None:
    port = dist.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
