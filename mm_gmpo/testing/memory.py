"""Exact, allocator-free memory probes for CPU runs: live tensor bytes and saved-for-backward bytes.

Why: RSS on a CPU box mixes the allocator's caching, the Python heap and other threads, and is
noisy on a shared machine. The memory plan (``mm_gmpo.train.memory_plan``) predicts tensor
bytes, so the checks count tensor bytes: every storage an op creates while a
:class:`LiveTensorBytes` mode is active is added when it appears and subtracted when it is freed
(a weakref finalizer on the storage), which gives the exact peak of tensor memory of a forward
and backward, the same on every run. :class:`SavedTensorBytes` counts the distinct storages
autograd keeps for backward (``saved_tensors_hooks``), i.e. the activations.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensorBytes(TorchDispatchMode):
    """Peak and current bytes of the tensor storages created by ops run under this mode.

    Tensors that existed before (parameters, inputs) are not counted; a view or an in-place op
    adds nothing. Use as a context manager around forward + backward.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        # a view or an in-place op returns an input's storage: nothing new, even when that input
        # was made outside the mode (a parameter, a pre-allocated gradient)
        inputs = {
            id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = id(storage)
                if storage.nbytes() and key not in self._sizes and key not in inputs:
                    self._sizes[key] = storage.nbytes()
                    self.live += storage.nbytes()
                    weakref.finalize(storage, self._free, key)
        self.peak = max(self.peak, self.live)
        return out


class SavedTensorBytes:
    """Bytes of the distinct storages autograd saves for backward, parameters excluded.

    ``split`` (optional) names a predicate on the saved tensor; its bytes go to ``.matched``
    instead of ``.other`` (e.g. the vocabulary-wide log-prob tensors against the activations).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = (), split: Any = None) -> None:
        self._exclude = {p.untyped_storage().data_ptr() for p in exclude}
        self._split = split
        self._seen: dict[int, tuple[int, bool]] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self._exclude and ptr not in self._seen:
            self._seen[ptr] = (storage.nbytes(), bool(self._split(t)) if self._split else False)
        return t

    def __enter__(self) -> SavedTensorBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(n for n, _ in self._seen.values())

    @property
    def matched(self) -> int:
        return sum(n for n, hit in self._seen.values() if hit)

    @property
    def other(self) -> int:
        return self.total - self.matched
