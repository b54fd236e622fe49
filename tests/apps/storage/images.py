"""Test images made on the fly with Pillow and pillow-heif (no binary fixtures to keep in the repo)."""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib

import pillow_heif
from PIL import Image

pillow_heif.register_heif_opener()


def encode(image_format: str, size: tuple[int, int] = (64, 48), *, noise: bool = False, **options) -> bytes:
    if noise:
        rng = random.Random(size[0] * 7919 + size[1])
        image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    else:
        image = Image.new("RGB", size, (200, 120, 60))
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def jpeg(size: tuple[int, int] = (64, 48), **options) -> bytes:
    return encode("JPEG", size, **options)


def rotated_jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    """A JPEG stored `size` wide that says (EXIF orientation 6) to show it turned a quarter."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode("JPEG", size, exif=exif.tobytes())


def avif(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode("AVIF", size)


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode("PNG", size)


def webp(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode("WEBP", size)


def heic(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode("HEIF", size)


def gif(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode("GIF", size)


def tiff(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode("TIFF", size)


def animated_png() -> bytes:
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg((256, 256), noise=True, quality=90)
    return data[: len(data) // 2]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


@functools.lru_cache
def png_declaring(width: int, height: int) -> bytes:
    """A valid, tiny 1-bit PNG that declares `width` x `height` pixels (a decompression bomb when big)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
