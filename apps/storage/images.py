"""Checks an uploaded photo by its bytes, whatever the client or the storage claimed about it.

1. Sniff the type from the magic bytes; only JPEG, PNG, WebP and HEIC pass, and it must be the type
   the upload was requested for.
2. Open it with Pillow restricted to that one format (`formats=[...]`), so no other decoder ever sees it.
3. Refuse before decoding: more pixels than the cap (the decompression-bomb guard), animations.
4. Verify and fully decode (`load()`), so a truncated or damaged file is refused here, not later.
   `decode_image` returns those pixels (a JPEG optionally at a reduced DCT scale) to a caller that needs
   them, so the file is not decoded twice.

Pillow warns (`DecompressionBombWarning`) above `Image.MAX_IMAGE_PIXELS` and raises above twice that.
The cap below is never above `MAX_IMAGE_PIXELS`, so everything Pillow would only warn about is refused:
the warning is treated as an error without touching the process-wide warning filters.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import pillow_heif
from PIL import Image

logger = logging.getLogger(__name__)

pillow_heif.register_heif_opener()

# Pillow format name -> the content type the app declares for it.
CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "HEIF": "image/heic",
    "WEBP": "image/webp",
}
ALLOWED_CONTENT_TYPES = frozenset(CONTENT_TYPES.values())
FORMAT_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "HEIF": "HEIC", "WEBP": "WebP"}

# EXIF orientations that turn the picture a quarter: the displayed width is the stored height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112

# ISO base media `ftyp` brands of HEVC-coded HEIF (what iPhones write). AVIF and others are refused.
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"})


class ImageRejected(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ImageFacts:
    format: str  # Pillow's name: JPEG, PNG, HEIF, WEBP
    content_type: str
    width: int  # as displayed, after the EXIF orientation
    height: int


def _is_heic(data: bytes) -> bool:
    if len(data) < 16 or data[4:8] != b"ftyp":
        return False
    box_size = int.from_bytes(data[:4], "big")
    if not 16 <= box_size <= min(len(data), 4096):
        return False
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, box_size - 3, 4)}
    return bool(brands & _HEIC_BRANDS)


def sniff(data: bytes) -> str | None:
    """The Pillow format name for the file's magic bytes, or None when it is not an allowed type."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if _is_heic(data):
        return "HEIF"
    return None


def _pixels_text(pixels: int) -> str:
    return f"{pixels / 1_000_000:.0f} megapixels" if pixels >= 1_000_000 else f"{pixels} pixels"


def inspect_image(data: bytes, *, declared_content_type: str, max_pixels: int) -> ImageFacts:
    """Facts about a photo that passed every check, or ImageRejected with a reason and a message."""
    facts, _ = decode_image(data, declared_content_type=declared_content_type, max_pixels=max_pixels)
    return facts


def decode_image(
    data: bytes, *, declared_content_type: str, max_pixels: int, draft_long_side: float | None = None
) -> tuple[ImageFacts, Image.Image]:
    """`inspect_image`'s checks, and the decoded image (as stored: not yet turned by its EXIF orientation)
    for a caller that needs the pixels, so that the file is decoded once.

    `draft_long_side`: a JPEG is decoded at the largest DCT scale (1/2, 1/4, 1/8) whose long side stays at
    least this many pixels (`Image.draft`). A reduced decode still reads every entropy-coded byte, so a
    truncated or damaged file is refused as by a full one. Other formats are always decoded in full."""
    # 1. Type by content
    image_format = sniff(data)
    if image_format is None:
        raise ImageRejected(
            "UNSUPPORTED_TYPE", "This file is not a supported photo. Upload a JPEG, PNG, HEIC or WebP image."
        )
    content_type = CONTENT_TYPES[image_format]
    if content_type != declared_content_type:
        raise ImageRejected(
            "TYPE_MISMATCH",
            f"This file is a {FORMAT_NAMES[image_format]} image, but the upload was requested for "
            f"{declared_content_type}. Request a new upload with contentType {content_type}.",
        )

    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS)
    too_many_pixels = ImageRejected(
        "TOO_MANY_PIXELS",
        f"The image has too many pixels. Upload a photo of at most {_pixels_text(limit)}.",
    )
    damaged = ImageRejected("CORRUPT", "The file is damaged or incomplete. Upload the photo again.")
    try:
        # 2. Open with one decoder; 3. refuse before decoding
        with Image.open(io.BytesIO(data), formats=[image_format]) as image:
            width, height = image.size
            if width * height > limit:
                raise too_many_pixels
            if getattr(image, "n_frames", 1) > 1:
                raise ImageRejected("ANIMATED", "Animated images are not supported. Upload a still photo.")
            image.verify()
        # 4. Decode every pixel (verify() leaves the image unusable, so open it again)
        with Image.open(io.BytesIO(data), formats=[image_format]) as image:
            factor = draft_factor(image.size, draft_long_side) if image.format == "JPEG" else 1
            if factor > 1:
                image.draft(None, (width // factor, height // factor))
            image.load()
            if image.getexif().get(_EXIF_ORIENTATION) in _QUARTER_TURNS:
                width, height = height, width
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        logger.warning("decompression bomb refused (%s, %d bytes)", image_format, len(data))
        raise too_many_pixels from None
    except Exception as exc:  # untrusted input: any decoder failure means a damaged file
        logger.info("image refused as damaged (%s): %s: %s", image_format, type(exc).__name__, exc)
        raise damaged from None
    facts = ImageFacts(format=image_format, content_type=content_type, width=width, height=height)
    return facts, image


def draft_factor(size: tuple[int, int], long_side: float | None) -> int:
    """The largest power-of-two reduction (at most 8, JPEG's DCT scaling) that keeps the long side of
    `size` at least `long_side`; 1 when `long_side` is None."""
    factor = 1
    if long_side is None:
        return factor
    while factor < 8 and max(size) / (factor * 2) >= long_side:
        factor *= 2
    return factor
