"""Shuffled, epoch-aware, resumable prompt sampler.

Why not a DataLoader: the RL loop asks for one batch of prompt indices per step, and a resumed
run must see exactly the batches the uninterrupted run would have seen, which needs nothing but
(epoch, position) saved in the checkpoint.

The index stream is the concatenation of per-epoch permutations, epoch ``e`` shuffled with seed
``seed + e``. Batches are cut from that stream, so every batch is full and every record appears
exactly once per epoch; the batch that straddles an epoch boundary takes the tail of one
permutation and the head of the next.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class PromptSampler:
    """Yields batches of record indices: ``next_batch() -> list[int]``.

    ``state_dict()`` / ``load_state_dict()`` capture the position; ``n_records`` and ``seed`` are
    checked on load because resuming over a different dataset or seed would silently change the
    batches. ``batch_size`` may change on resume (the position is counted in records).
    """

    def __init__(self, n_records: int, batch_size: int, seed: int = 0, shuffle: bool = True) -> None:
        if n_records <= 0:
            raise ValueError(f"n_records must be positive, got {n_records}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.n_records = n_records
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0  # index into the current epoch's permutation
        self.batches_served = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n_records)
        return np.random.default_rng(self.seed + epoch).permutation(self.n_records)  # [n_records]

    def next_batch(self) -> list[int]:
        batch = self.take(self.batch_size)
        self.batches_served += 1
        return batch

    def take(self, count: int) -> list[int]:
        """The next ``count`` indices of the stream (replacements for records a step refused)."""
        batch: list[int] = []
        while len(batch) < count:
            if self.position == self.n_records:
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
            take = min(count - len(batch), self.n_records - self.position)
            batch.extend(int(i) for i in self._order[self.position : self.position + take])
            self.position += take
        return batch

    @property
    def batches_per_epoch(self) -> float:
        return self.n_records / self.batch_size

    def state_dict(self) -> dict[str, Any]:
        return {
            "n_records": self.n_records,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "epoch": self.epoch,
            "position": self.position,
            "batches_served": self.batches_served,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("n_records", "seed", "shuffle"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]!r} but this sampler has {getattr(self, key)!r}; "
                    "resuming would not reproduce the original batches"
                )
        if not 0 <= state["position"] <= self.n_records:
            raise ValueError(f"sampler state position {state['position']} outside [0, {self.n_records}]")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.batches_served = int(state["batches_served"])
        self._order = self._permutation(self.epoch)
