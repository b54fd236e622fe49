"""A small visible mark burnt into a clip's frames before encoding (a job's `watermark`, per tier).

The text sits in the bottom-right corner on a translucent dark plate, its height about 4.5% of the
frame's shorter side (smaller when the text would take more than half the width). The mark is drawn once
with PIL as an RGBA patch and blended into the corner of every frame with numpy, in place: only the
corner's pixels are touched. The machine-readable label is the C2PA manifest
(gpu_worker/content_credentials.py); this mark is for people.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TEXT_HEIGHT_RATIO = 0.045  # of the frame's shorter side
MIN_FONT_PX = 6
MAX_WIDTH_RATIO = 0.5  # of the frame's width
PLATE_ALPHA = 0.45
TEXT_ALPHA = 0.9


@dataclass(frozen=True)
class Corner:
    """Where the mark goes in a frame: rows y0..y1, columns x0..x1 (exclusive ends)."""

    x0: int
    y0: int
    x1: int
    y1: int


def _mark(text: str, *, width: int, height: int) -> np.ndarray:
    """The mark as float32 RGBA in [0, 1], sized for a `width` x `height` frame."""
    font_px = max(MIN_FONT_PX, round(min(width, height) * TEXT_HEIGHT_RATIO))
    font = ImageFont.load_default(size=font_px)
    left, top, right, bottom = font.getbbox(text)
    if right - left > width * MAX_WIDTH_RATIO and font_px > MIN_FONT_PX:
        font_px = max(MIN_FONT_PX, int(font_px * width * MAX_WIDTH_RATIO / (right - left)))
        font = ImageFont.load_default(size=font_px)
        left, top, right, bottom = font.getbbox(text)
    pad = max(2, font_px // 3)
    plate_w = min(width, right - left + 2 * pad)
    plate_h = min(height, bottom - top + 2 * pad)
    image = Image.new("RGBA", (plate_w, plate_h), (0, 0, 0, round(255 * PLATE_ALPHA)))
    ImageDraw.Draw(image).text(
        (pad - left, pad - top), text, font=font, fill=(255, 255, 255, round(255 * TEXT_ALPHA))
    )
    return np.asarray(image, dtype=np.float32) / 255.0


def corner(text: str, *, width: int, height: int) -> Corner:
    """The region of a `width` x `height` frame that `burn_watermark` changes."""
    return _place(_mark(text, width=width, height=height), width=width, height=height)


def _place(mark: np.ndarray, *, width: int, height: int) -> Corner:
    mark_h, mark_w = mark.shape[:2]
    margin = max(1, round(min(width, height) * 0.02))
    x1, y1 = max(mark_w, width - margin), max(mark_h, height - margin)
    return Corner(x0=x1 - mark_w, y0=y1 - mark_h, x1=x1, y1=y1)


def burn_watermark(frames: np.ndarray, text: str) -> np.ndarray:
    """Blends `text` into the bottom-right corner of (T, H, W, 3) uint8 `frames`, in place; returns them."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}")
    _, height, width, _ = frames.shape
    mark = _mark(text, width=width, height=height)
    box = _place(mark, width=width, height=height)
    alpha = mark[..., 3:]
    over = mark[..., :3] * alpha * 255.0
    keep = 1.0 - alpha
    for frame in frames:  # one frame at a time: no float copy of the clip
        region = frame[box.y0 : box.y1, box.x0 : box.x1]
        region[...] = (region * keep + over + 0.5).astype(np.uint8)
    return frames
