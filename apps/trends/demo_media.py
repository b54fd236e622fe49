"""Draws the demo catalogue's covers and preview clips at load time.

The fixtures ship colours, not pictures: a cover is a two-colour gradient with soft shapes and the title,
a preview is a few seconds of that gradient drifting. Deterministic per slug, a few KB each, and written
through the same storage path as a curator's upload, so nothing binary sits in git.
"""

from __future__ import annotations

import hashlib
import io
import random

COVER_SIZE = (360, 640)
PREVIEW_SIZE = (144, 256)
PREVIEW_FRAMES = 24
PREVIEW_FPS = 12


def _rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return tuple(int(color[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def _gradient(size: tuple[int, int], top: str, bottom: str, shift: float = 0.0):
    from PIL import Image

    width, height = size
    a, b = _rgb(top), _rgb(bottom)
    column = Image.new("RGB", (1, height))
    for y in range(height):
        t = min(max(y / max(height - 1, 1) + shift, 0.0), 1.0)
        column.putpixel((0, y), tuple(int(a[i] + (b[i] - a[i]) * t) for i in range(3)))
    return column.resize(size)


def draw_cover(*, slug: str, title: str, colors: list[str], size: tuple[int, int] = COVER_SIZE) -> bytes:
    """A JPEG cover: gradient, a few translucent circles, the title at the bottom."""
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(int(hashlib.sha256(slug.encode()).hexdigest()[:8], 16))
    image = _gradient(size, colors[0], colors[1]).convert("RGBA")
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    width, height = size
    for _ in range(6):
        radius = rng.randint(width // 10, width // 3)
        x, y = rng.randint(0, width), rng.randint(0, height)
        draw.ellipse(
            (x - radius, y - radius, x + radius, y + radius), fill=(255, 255, 255, rng.randint(25, 70))
        )
    image = Image.alpha_composite(image, overlay).convert("RGB")
    text = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=max(height // 18, 12))
    except TypeError:  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    text.rectangle((0, int(height * 0.82), width, height), fill=(0, 0, 0))
    text.text((width // 16, int(height * 0.86)), title, fill=(255, 255, 255), font=font)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=78, optimize=True)
    return out.getvalue()


def draw_preview(*, colors: list[str], size: tuple[int, int] = PREVIEW_SIZE) -> bytes | None:
    """An H.264 MP4 of the gradient drifting up and down; None when imageio-ffmpeg is not installed."""
    try:
        import imageio_ffmpeg
        import numpy as np
    except ImportError:
        return None
    import os
    import tempfile

    width, height = size
    frames = []
    for i in range(PREVIEW_FRAMES):
        shift = 0.35 * np.sin(2 * np.pi * i / PREVIEW_FRAMES)
        frames.append(np.asarray(_gradient(size, colors[0], colors[1], shift=float(shift)), dtype=np.uint8))
    handle, path = tempfile.mkstemp(suffix=".mp4")
    os.close(handle)
    try:
        writer = imageio_ffmpeg.write_frames(
            path,
            (width, height),
            fps=PREVIEW_FPS,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            macro_block_size=16,
            quality=None,
            ffmpeg_log_level="error",
            output_params=["-movflags", "+faststart", "-crf", "30", "-preset", "veryfast"],
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)
