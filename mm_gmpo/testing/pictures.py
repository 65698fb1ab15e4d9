"""Small non-constant pictures for VL tests.

A constant picture gives every patch the same features, so a test could not see patches
reordered, images mixed up, or a vision-tower adapter left out; a seeded colour gradient can.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def gradient_png(width: int, height: int, seed: int) -> bytes:
    """PNG bytes of a diagonal colour gradient with a seeded per-channel offset."""
    rng = np.random.default_rng(seed)
    base = np.add.outer(np.arange(height) * 3, np.arange(width) * 5)[..., None] + rng.integers(
        0, 60, 3
    )  # [H, W, 3]
    buf = io.BytesIO()
    Image.fromarray((base % 256).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
