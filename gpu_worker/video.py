"""Frames to a mobile-ready MP4 and a poster JPEG, and back again for the quality gate.

H.264 High, yuv420p, `+faststart` (the `moov` atom before `mdat`, so a phone starts playing before the
download ends), written by the ffmpeg that imageio-ffmpeg bundles (reference/stack-on-this-machine.md §2).
diffusers' `export_to_video` sets no faststart, so it is not used.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

CRF = 18
PRESET = "veryfast"
JPEG_QUALITY = 90


class VideoDecodeError(Exception):
    """The file is not a video ffmpeg can decode."""


@dataclass(frozen=True)
class DecodedVideo:
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    frames: np.ndarray  # (T, H, W, 3) uint8

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def frames_to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (what diffusers' `output_type="np"` gives) to uint8, frame by frame (no
    float temporaries the size of the clip)."""
    if frames.dtype == np.uint8:
        return frames
    out = np.empty(frames.shape, dtype=np.uint8)
    for index in np.ndindex(frames.shape[:-3]):
        out[index] = (np.clip(frames[index], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out


def encode_mp4(frames: np.ndarray, path: Path, *, fps: int, crf: int = CRF, preset: str = PRESET) -> None:
    """Writes (T, H, W, 3) uint8 frames at their own size (even width and height) and `fps`."""
    count, height, width, _ = frames.shape
    if width % 2 or height % 2:
        raise ValueError(f"H.264 yuv420p needs an even width and height, got {width}x{height}")
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        macro_block_size=2,  # never resize: the size asked for is the size written
        quality=None,
        ffmpeg_log_level="error",
        output_params=[
            "-movflags", "+faststart",
            "-crf", str(crf),
            "-preset", preset,
            "-profile:v", "high",
            "-g", str(max(1, 2 * fps)),
        ],
    )  # fmt: skip
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def read_mp4(path: Path) -> DecodedVideo:
    """Decodes every frame of a video file; VideoDecodeError when ffmpeg cannot."""
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = reader.__next__()
        width, height = meta["size"]
        frames = [np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3) for raw in reader]
    except (RuntimeError, OSError, StopIteration, KeyError, ValueError) as exc:
        raise VideoDecodeError(f"cannot decode {Path(path).name}: {exc}") from None
    if not frames:
        raise VideoDecodeError(f"{Path(path).name} has no frames")
    return DecodedVideo(
        codec=str(meta.get("codec", "")),
        pix_fmt=str(meta.get("pix_fmt", "")),
        width=int(width),
        height=int(height),
        fps=float(meta.get("fps", 0.0)),
        frames=np.stack(frames),
    )


def mp4_top_level_boxes(path: Path) -> list[str]:
    """The top-level MP4 box types in file order (`ftyp`, `moov`, `mdat`, ...)."""
    boxes = []
    with Path(path).open("rb") as handle:
        while header := handle.read(8):
            if len(header) < 8:
                break
            size, kind = struct.unpack(">I4s", header)
            if size == 1:  # 64-bit size follows
                size = struct.unpack(">Q", handle.read(8))[0]
                handle.seek(size - 16, 1)
            elif size == 0:  # to the end of the file
                boxes.append(kind.decode("latin-1"))
                break
            else:
                handle.seek(size - 8, 1)
            boxes.append(kind.decode("latin-1"))
    return boxes


def luma(frames: np.ndarray) -> np.ndarray:
    """Rec. 601 luma in [0, 1] of (..., 3) uint8 or float pixels, as float32: call it per frame, not on
    a whole clip (that is a float32 copy of the clip)."""
    data = frames.astype(np.float32)
    if frames.dtype == np.uint8:
        data /= 255.0
    return data @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def sharpness(frame_luma: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: higher is sharper."""
    lap = (
        -4 * frame_luma[1:-1, 1:-1]
        + frame_luma[:-2, 1:-1]
        + frame_luma[2:, 1:-1]
        + frame_luma[1:-1, :-2]
        + frame_luma[1:-1, 2:]
    )
    return float(lap.var()) if lap.size else 0.0


def poster_index(frames: np.ndarray, *, ratio: float = 0.7) -> int:
    """The first frame at least `ratio` times as sharp as the sharpest one (a clip often starts blurred)."""
    scores = [sharpness(luma(frame)) for frame in frames]  # one frame's luma at a time
    best = max(scores)
    return next(i for i, score in enumerate(scores) if score >= ratio * best)


def write_jpeg(frame: np.ndarray, path: Path, *, quality: int = JPEG_QUALITY) -> None:
    from PIL import Image

    Image.fromarray(frame).save(path, format="JPEG", quality=quality, optimize=True, progressive=True)
