"""Shared fixtures: image bytes in every awkward flavour, built in memory (no committed binaries)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image


class Images:
    """Factories for encoded images; each says in its name what is special about it."""

    @staticmethod
    def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        return buf.getvalue()

    @classmethod
    def png(cls, size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (10, 120, 200)) -> bytes:
        return cls.encode(Image.new("RGB", size, color))

    @classmethod
    def noisy_jpeg(cls, size: tuple[int, int] = (96, 64), seed: int = 0) -> bytes:
        rng = np.random.default_rng(seed)
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        return cls.encode(Image.fromarray(arr), "JPEG", quality=90)

    @classmethod
    def truncated_jpeg(cls) -> bytes:
        data = cls.noisy_jpeg()
        return data[: len(data) // 2]

    @staticmethod
    def header_only_png(width: int, height: int) -> bytes:
        """A PNG whose header claims width x height but carries almost no pixel data.

        Lets tests present a 'huge' image without allocating it: the size check must fire
        from the header, before any decoding.
        """

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
        body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
        return b"\x89PNG\r\n\x1a\n" + body

    @classmethod
    def palette_transparent(cls) -> bytes:
        img = Image.new("P", (40, 40), 0)
        img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        img.paste(1, (0, 0, 20, 40))  # left half red, right half index 0 = transparent
        return cls.encode(img, transparency=0)

    @classmethod
    def la(cls) -> bytes:
        return cls.encode(Image.new("LA", (40, 40), (0, 0)))  # black but fully transparent

    @classmethod
    def cmyk_jpeg(cls) -> bytes:
        return cls.encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG", quality=95)

    @classmethod
    def gray16(cls) -> bytes:
        arr = np.zeros((32, 32), dtype=np.uint16)
        arr[:, 16:] = 65535
        arr[:, 8:16] = 32768
        return cls.encode(Image.fromarray(arr))


@pytest.fixture
def images() -> type[Images]:
    return Images
