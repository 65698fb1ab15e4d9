"""``save_pretrained`` that leaves DeepSpeed unimported on runs that do not use it.

transformers' ``save_pretrained`` unwraps the model through accelerate, which imports
DeepSpeed whenever it is installed (to test ``isinstance(model, DeepSpeedEngine)``). Importing
DeepSpeed costs a second or two and prints its "Setting accelerator to CPU" warning on every
CPU run, although nothing in a torch-engine run uses it. When DeepSpeed is not imported yet,
no object in the process can be a DeepSpeed engine, so the check can be skipped: the save
is the same, without the import.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock


@contextmanager
def deepspeed_left_unimported() -> Iterator[None]:
    """Within: accelerate's unwrapping does not import DeepSpeed (unless it is imported already)."""
    if "deepspeed" in sys.modules:
        yield
        return
    try:
        import accelerate.utils.other as accelerate_other
    except ImportError:  # no accelerate: transformers unwraps without it
        yield
        return
    if not hasattr(accelerate_other, "is_deepspeed_available"):  # another accelerate layout
        yield
        return
    with mock.patch.object(accelerate_other, "is_deepspeed_available", lambda: False):
        yield


def save_pretrained(model: Any, out: str | Path, **kwargs: Any) -> None:
    """``model.save_pretrained(out, **kwargs)`` without importing DeepSpeed for it."""
    with deepspeed_left_unimported():
        model.save_pretrained(out, **kwargs)
