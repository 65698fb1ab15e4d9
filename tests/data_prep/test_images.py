"""load_image_rgb: every refusal reason, every mode conversion, the pixel budget."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mm_gmpo.data.images import ImageError, fit_max_pixels, load_image_rgb


def _reason(ref, **kw) -> str:
    with pytest.raises(ImageError) as info:
        load_image_rgb(ref, **kw)
    return info.value.reason


def test_refusals_by_reason(images, tmp_path):
    empty_file = tmp_path / "empty.png"
    empty_file.write_bytes(b"")
    assert _reason(b"") == "empty"
    assert _reason(str(empty_file)) == "empty"
    assert _reason(str(tmp_path / "nope.png")) == "missing"
    assert _reason(images.truncated_jpeg()) == "unreadable"
    assert _reason(b"this is not an image at all") == "unreadable"
    assert _reason(images.png((1, 1))) == "too_small"
    assert _reason(images.png((27, 400))) == "too_small"
    assert _reason(images.png((28, 6000))) == "bad_aspect"
    # 64 MP claimed in the header: refused by our 50 MP limit before any decoding ...
    assert _reason(images.header_only_png(8000, 8000)) == "too_large"
    # ... and 400 MP trips Pillow's own decompression-bomb guard even with our limit off.
    assert _reason(images.header_only_png(20000, 20000), max_image_pixels=None) == "too_large"
    assert _reason(images.png((40, 40)), max_image_pixels=1000) == "too_large"


def test_error_names_the_file(tmp_path, images):
    path = tmp_path / "broken.jpg"
    path.write_bytes(images.truncated_jpeg())
    with pytest.raises(ImageError, match="broken.jpg") as info:
        load_image_rgb(str(path))
    assert info.value.ref == str(path)


def test_smallest_allowed_side_loads(images):
    img = load_image_rgb(images.png((28, 28)))
    assert img.size == (28, 28) and img.mode == "RGB"


def test_palette_transparency_becomes_white(images):
    data = images.palette_transparent()
    assert Image.open(io.BytesIO(data)).mode == "P"
    img = load_image_rgb(data)
    assert img.mode == "RGB"
    assert img.getpixel((5, 5)) == (255, 0, 0)
    assert img.getpixel((35, 5)) == (255, 255, 255)


def test_transparent_la_becomes_white_not_black(images):
    data = images.la()
    assert Image.open(io.BytesIO(data)).mode == "LA"
    assert load_image_rgb(data).getpixel((3, 3)) == (255, 255, 255)


def test_cmyk_converted(images):
    data = images.cmyk_jpeg()
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    r, g, b = load_image_rgb(data).getpixel((20, 20))
    assert r > 200 and g < 60 and b < 60  # CMYK (0, 255, 255, 0) is red


def test_16bit_gray_rescaled_not_clipped(images):
    data = images.gray16()
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    img = load_image_rgb(data)
    assert img.mode == "RGB"
    assert img.getpixel((2, 2)) == (0, 0, 0)
    assert img.getpixel((10, 2)) == (128, 128, 128)  # a plain convert would give 255
    assert img.getpixel((20, 2)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["L", "1", "RGBA"])
def test_other_modes_to_rgb(images, mode):
    img = load_image_rgb(images.encode(Image.new(mode, (30, 30))))
    assert img.mode == "RGB"


def test_exif_rotation_applied(images):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    data = images.encode(Image.new("RGB", (60, 30)), "JPEG", exif=exif.tobytes())
    assert load_image_rgb(data).size == (30, 60)


def test_max_pixels_budget_keeps_aspect(images):
    img = load_image_rgb(images.png((400, 200)), max_pixels=20_000)
    assert img.width * img.height <= 20_000
    assert abs(img.width / img.height - 2.0) < 0.05
    assert load_image_rgb(images.png((100, 50)), max_pixels=20_000).size == (100, 50)  # no upscaling


@pytest.mark.parametrize("size", [(1000, 1), (333, 777), (4000, 3000), (29, 29)])
def test_fit_max_pixels(size):
    w, h = fit_max_pixels(*size, 841)
    assert w * h <= 841 and w <= size[0] and h <= size[1]
    assert np.isclose(w / h, size[0] / size[1], rtol=0.5) or min(w, h) == 1
