"""Trend media (covers, preview videos, promo images): stored by key, served by URL.

The one place that turns a storage key into a URL and writes or checks trend media. For now it uses a
local folder under `MEDIA_ROOT` served at `TRENDS_MEDIA_URL` (backend/urls.py); when `apps.storage` has
its download URLs, these three functions switch to it and nothing else changes.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

KEY_PREFIX = "trends/"


def media_path(key: str) -> Path:
    # Keys are made by this app (trends/<kind>/<name>); refuse anything that could leave the folder.
    normalized = posixpath.normpath(key)
    if not key or normalized != key or key.startswith(("/", "..")) or not key.startswith(KEY_PREFIX):
        raise ValueError(f"not a trend media key: {key!r}")
    return Path(settings.MEDIA_ROOT) / key


def media_url(key: str) -> str | None:
    """The URL the apps download `key` from; None when there is no key."""
    if not key:
        return None
    base = settings.PUBLIC_BASE_URL.rstrip("/")
    return f"{base}{settings.TRENDS_MEDIA_URL}{key.removeprefix(KEY_PREFIX)}"


def media_exists(key: str) -> bool:
    try:
        return media_path(key).is_file()
    except ValueError:
        return False


def media_save(key: str, content: bytes) -> None:
    path = media_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(content)
    tmp.replace(path)


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    extension: str


ALLOWED_IMAGE_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
MAX_IMAGE_PIXELS = 4096 * 4096


def image_inspect(content: bytes) -> ImageInfo:
    """Size and type of an uploaded image, decoded safely. Raises ValueError for anything else."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(content)) as image:
                kind = image.format
                width, height = image.size
                if kind not in ALLOWED_IMAGE_FORMATS:
                    raise ValueError("Upload a JPEG, PNG or WebP image.")
                if width * height > MAX_IMAGE_PIXELS:
                    raise ValueError("The image is too large; keep it under 4096 x 4096 pixels.")
                image.verify()
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError("This file is not an image that can be read.") from exc
    return ImageInfo(width=width, height=height, extension=ALLOWED_IMAGE_FORMATS[kind])


def video_inspect(path_or_bytes: bytes) -> tuple[int, int, float] | None:
    """(width, height, seconds) of an MP4, when the ffmpeg of imageio-ffmpeg is installed; else None."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(path_or_bytes)
        handle.flush()
        try:
            reader = imageio_ffmpeg.read_frames(handle.name)
            meta = reader.__next__()
            reader.close()
        except Exception as exc:
            raise ValueError("This file is not a video that can be read.") from exc
    width, height = meta["size"]
    return int(width), int(height), float(meta.get("duration") or 0.0)
