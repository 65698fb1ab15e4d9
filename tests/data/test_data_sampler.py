"""PromptSampler: epochs are permutations, reshuffled per epoch, and a resumed run sees the same batches."""

from __future__ import annotations

import json

import pytest

from mm_gmpo.data import PromptSampler


def _epochs(indices: list[int], n: int) -> list[list[int]]:
    return [indices[i : i + n] for i in range(0, len(indices), n)]


def test_every_epoch_is_a_permutation_and_batches_are_full() -> None:
    s = PromptSampler(n_records=10, batch_size=4, seed=7)
    batches = [s.next_batch() for _ in range(10)]  # 40 indices = 4 epochs
    assert all(len(b) == 4 for b in batches)
    flat = [i for b in batches for i in b]
    epochs = _epochs(flat, 10)
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 4  # reshuffled each epoch
    assert epochs[0] != list(range(10))
    assert s.epoch == 3 and s.batches_served == 10


def test_same_seed_same_batches_other_seed_differs() -> None:
    def first_batches(seed: int) -> list[list[int]]:
        s = PromptSampler(50, 8, seed=seed)
        return [s.next_batch() for _ in range(3)]

    assert first_batches(1) == first_batches(1)
    assert first_batches(1) != first_batches(2)


@pytest.mark.parametrize("stop_after", [1, 2, 3, 5])
def test_resume_continues_with_the_same_batches(stop_after: int) -> None:
    ref = PromptSampler(n_records=7, batch_size=3, seed=11)
    expected = [ref.next_batch() for _ in range(8)]

    first = PromptSampler(n_records=7, batch_size=3, seed=11)
    seen = [first.next_batch() for _ in range(stop_after)]
    state = json.loads(json.dumps(first.state_dict()))  # checkpoints store it as plain data

    resumed = PromptSampler(n_records=7, batch_size=3, seed=11)
    resumed.load_state_dict(state)
    seen += [resumed.next_batch() for _ in range(8 - stop_after)]
    assert seen == expected
    assert resumed.batches_served == 8


def test_load_state_rejects_other_dataset_or_seed() -> None:
    state = PromptSampler(10, 2, seed=0).state_dict()
    with pytest.raises(ValueError, match="n_records"):
        PromptSampler(11, 2, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        PromptSampler(10, 2, seed=1).load_state_dict(state)
    with pytest.raises(ValueError):
        PromptSampler(0, 2)


def test_no_shuffle_is_sequential() -> None:
    s = PromptSampler(5, 2, seed=0, shuffle=False)
    assert [s.next_batch() for _ in range(3)] == [[0, 1], [2, 3], [4, 0]]
