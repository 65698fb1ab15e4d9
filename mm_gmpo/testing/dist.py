"""A one-rank process group for tests that build DeepSpeed engines in the test process.

DeepSpeed needs a process group even on one rank; a launcher's environment variables left
from elsewhere would make the group wait for ranks that never come, so they are set aside
while the group lives and put back afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

# What torchrun and the DeepSpeed launcher set for every rank.
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@contextmanager
def single_rank_group() -> Iterator[None]:
    """Within: a world-size-1 gloo group, with no launcher variables in the environment."""
    from mm_gmpo.train import dist

    saved = {key: os.environ.pop(key) for key in DIST_ENV if key in os.environ}
    dist.init_distributed()
    try:
        assert dist.world_size() == 1
        yield
    finally:
        dist.shutdown()
        for key in DIST_ENV:
            os.environ.pop(key, None)
        os.environ.update(saved)
