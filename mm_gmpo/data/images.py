"""Load one image reference into a clean RGB picture, or say precisely why it cannot be used.

Both the data-prep validation pass and the VL training path call :func:`load_image_rgb`, so an
image that passed validation is guaranteed to load the same way during training. Failures are
reported as :class:`ImageError` with a short machine-readable ``reason`` (used to tally drops
in summaries) and the offending reference (so the message names the file).

Limits, and why:

* ``min_side`` defaults to 28 px: Qwen2.5-VL cuts images into 14 px patches and merges 2x2
  patches into one token, so a side shorter than 28 px cannot form a single token (its
  processor rejects or distorts such images).
* ``max_image_pixels`` defaults to 50 megapixels: far above any diagram or photo in the
  datasets we use, and small enough that a decoded RGB buffer stays below ~150 MB. The size is
  checked from the header before decoding. Pillow's own decompression-bomb guard
  (``Image.MAX_IMAGE_PIXELS``, 89.5 MP by default) is set to the same limit while the image is
  opened, so the limit given is the limit applied, above Pillow's default too; with no limit
  (``None``) Pillow's default guard stays, its warning turned into an error.
* ``max_aspect`` defaults to 200: the Qwen2.5-VL resize rule refuses wider ratios.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mm_gmpo.data.records import ImageRef

DEFAULT_MIN_SIDE = 28
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
DEFAULT_MAX_ASPECT = 200.0

# Reasons an image is refused; summaries count drops by these names.
REASONS = ("missing", "empty", "unreadable", "too_small", "too_large", "bad_aspect")


class ImageError(ValueError):
    """An image that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, ref: ImageRef | Path, detail: str = "") -> None:
        self.reason = reason
        self.ref = describe_ref(ref)
        self.detail = detail
        msg = f"{reason}: {self.ref}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


def describe_ref(ref: ImageRef | Path) -> str:
    """A short printable name for an image reference (never dumps raw bytes)."""
    if isinstance(ref, bytes | bytearray):
        return f"<{len(ref)} bytes in memory>"
    return str(ref)


@contextlib.contextmanager
def pillow_pixel_limit(limit: int | None) -> Iterator[None]:
    """Pillow's decompression-bomb guard at ``limit`` pixels for the block (None: Pillow's own).

    Pillow reads one module-wide setting; it is restored on the way out.
    """
    saved = Image.MAX_IMAGE_PIXELS
    if limit is not None:
        Image.MAX_IMAGE_PIXELS = limit
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _open(ref: ImageRef | Path) -> Image.Image:
    """Open lazily (header only); missing and empty inputs are told apart from corrupt ones."""
    if isinstance(ref, bytes | bytearray):
        if len(ref) == 0:
            raise ImageError("empty", ref, "zero bytes")
        source: io.BytesIO | Path = io.BytesIO(bytes(ref))
    else:
        path = Path(os.fspath(ref))
        if not path.is_file():
            raise ImageError("missing", ref, "no such file")
        if path.stat().st_size == 0:
            raise ImageError("empty", ref, "zero-byte file")
        source = path
    try:
        with warnings.catch_warnings():
            # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; treat it as fatal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("too_large", ref, str(e)) from e
    except UnidentifiedImageError as e:  # its text names a BytesIO object, not the image
        raise ImageError("unreadable", ref, "not an image format Pillow can read") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError("unreadable", ref, str(e) or type(e).__name__) from e


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without the usual silent mistakes.

    Transparent pixels are composited onto white (diagrams drawn on a transparent background
    would otherwise turn black), and 16/32-bit greyscale is rescaled instead of clipped (a
    plain ``convert`` saturates everything above 255 to white).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.uint16)
        return Image.fromarray((arr >> 8).astype(np.uint8), mode="L").convert("RGB")
    if mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if top > 255.0:
            arr = arr * (255.0 / top)
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def fit_max_pixels(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest (w, h) with the same aspect ratio and w*h <= max_pixels (never upscales)."""
    if width * height <= max_pixels:
        return width, height
    scale = (max_pixels / (width * height)) ** 0.5
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    while w * h > max_pixels:  # float rounding can leave us one row/column over
        if w >= h:
            w -= 1
        else:
            h -= 1
    return w, h


def _check_header(
    img: Image.Image,
    ref: ImageRef | Path,
    min_side: int,
    max_image_pixels: int | None,
    max_aspect: float | None,
) -> None:
    """Size limits from the header alone, before paying for a decode."""
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError("empty", ref, f"size {width}x{height}")
    if max_image_pixels is not None and width * height > max_image_pixels:
        raise ImageError("too_large", ref, f"{width}x{height} > {max_image_pixels} pixels")
    if min(width, height) < min_side:
        raise ImageError("too_small", ref, f"{width}x{height}, shortest side < {min_side}")
    if max_aspect is not None and max(width, height) / min(width, height) > max_aspect:
        raise ImageError("bad_aspect", ref, f"{width}x{height}, ratio > {max_aspect}")


def load_image_rgb(
    ref: ImageRef | Path,
    max_pixels: int | None = None,
    *,
    min_side: int = DEFAULT_MIN_SIDE,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    max_aspect: float | None = DEFAULT_MAX_ASPECT,
) -> Image.Image:
    """Decode ``ref`` (encoded bytes or a path) fully into an RGB image.

    ``max_pixels``, when given, downsizes (aspect preserved) to that pixel budget; the other
    limits refuse the image with an :class:`ImageError`. EXIF orientation is applied so that
    the pixels the model sees match what a person viewing the file sees.
    """
    with pillow_pixel_limit(max_image_pixels):
        img = _open(ref)
    try:
        _check_header(img, ref, min_side, max_image_pixels, max_aspect)
        img.load()  # the real decode: truncated or corrupt data fails here
        img = ImageOps.exif_transpose(img) or img
        img = _to_rgb(img)
    except ImageError:
        img.close()  # release the file handle now rather than at garbage collection
        raise
    except (OSError, SyntaxError, ValueError) as e:
        img.close()
        raise ImageError("unreadable", ref, str(e) or type(e).__name__) from e
    if max_pixels is not None:
        size = fit_max_pixels(img.width, img.height, max_pixels)
        if size != img.size:
            img = img.resize(size, Image.Resampling.BICUBIC)
    return img


def image_size(ref: ImageRef | Path) -> tuple[int, int]:
    """(width, height) from the header alone: cheap, for statistics over many images."""
    with _open(ref) as img:
        return img.size


def encode_png(img: Image.Image) -> bytes:
    """Lossless encoding used whenever the validation pass had to change an image."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
