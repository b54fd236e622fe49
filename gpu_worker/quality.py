"""The quality gate: is this clip fit to deliver? A pure function of the frames (or of the file).

It refuses an output that does not decode, has the wrong frame count or size, is black or blank (one
flat colour), or is frozen (no motion between frames). The runner retries a refused output once with a
new seed, then fails the job with QUALITY_FAILED (contract.py).

Thresholds are on Rec. 601 luma in [0, 1], measured on the decoded H.264 frames:

- black: the brightest 1% of pixels is below BLACK_P99 (13/255): nothing in the picture is lit;
- blank: the median frame's spatial standard deviation is below BLANK_STD (1/255): a flat colour;
- frozen: the mean absolute change between consecutive frames is below FROZEN_MOTION (0.5/255).

A real clip clears these by far (a static shot still has grain and small motion); so does the random-
weight tiny-wan output, coloured noise that changes every frame: over 72 runs (6 seeds, 32x32 to
128x128, text and image to video, 2 and 4 steps) its spatial deviation was 2.5-4.3/255, its motion
4.3-7.4/255 and its p99 luma 130/255. Faces, moderation and prompt adherence are not judged here.

When the job asked for a sound, `check_audio_file` refuses a delivered MP4 whose audio track is missing,
not AAC stereo, not within AUDIO_LENGTH_TOLERANCE_S of the clip's length, or silent (RMS under
SILENT_DBFS; a trend sound is stored at -14 LUFS, so a real one sits around -17 dBFS RMS). A new seed does
not change the sound, so the runner fails such a job at once (QUALITY_FAILED) instead of rendering again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpu_worker import audio, video

BLACK_P99 = 13 / 255
BLANK_STD = 1 / 255
FROZEN_MOTION = 0.5 / 255
LUMA_BINS = 1024  # the luma histogram's resolution (p99_luma)

UNDECODABLE = "undecodable"
WRONG_FRAME_COUNT = "wrong_frame_count"
WRONG_SIZE = "wrong_size"
BLACK = "black"
BLANK = "blank"
FROZEN = "frozen"
NO_AUDIO = "no_audio"
WRONG_AUDIO_FORMAT = "wrong_audio_format"
WRONG_AUDIO_LENGTH = "wrong_audio_length"
SILENT_AUDIO = "silent_audio"

AUDIO_LENGTH_TOLERANCE_S = 0.1
SILENT_DBFS = -60.0


@dataclass(frozen=True)
class QualityReport:
    reason: str | None  # None when the clip passes
    message: str  # safe to show to a user
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.reason is None


def measure(frames: Iterable[np.ndarray]) -> dict[str, float]:
    """Brightness, flatness and motion of (H, W, 3) frames (uint8, or float in [0, 1]): a clip (T, H, W,
    3) or any iterable of frames.

    One frame at a time: the memory is a few float32 frames whatever the clip's length (a float32 copy of
    a 121-frame 720p clip would be 1.3 GB). The 99th percentile of luma comes from a histogram of
    LUMA_BINS bins (within 1/LUMA_BINS of the exact figure).
    """
    histogram = np.zeros(LUMA_BINS, dtype=np.int64)
    stds: list[float] = []
    total = 0.0
    motion = 0.0
    previous: np.ndarray | None = None
    for frame in frames:
        y = video.luma(frame)
        stds.append(float(y.std()))
        total += float(y.sum(dtype=np.float64))
        bins = np.minimum((y * LUMA_BINS).astype(np.int32), LUMA_BINS - 1)
        histogram += np.bincount(bins.ravel(), minlength=LUMA_BINS)
        if previous is not None:
            motion += float(np.abs(y - previous).mean())
        previous = y
    count, pixels = len(stds), int(histogram.sum())
    if not count:
        raise ValueError("no frames to measure")
    p99_bin = int(np.searchsorted(np.cumsum(histogram), 0.99 * pixels))
    return {
        "p99_luma": (p99_bin + 0.5) / LUMA_BINS,
        "mean_luma": total / pixels,
        "spatial_std": float(np.median(stds)),
        "motion": motion / (count - 1) if count > 1 else 0.0,
    }


def check_frames(frames: np.ndarray, *, width: int, height: int, num_frames: int) -> QualityReport:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        return QualityReport(UNDECODABLE, "the video has no frames")
    count, h, w, _ = frames.shape
    if (w, h) != (width, height):
        return QualityReport(WRONG_SIZE, f"the video is {w}x{h}, not {width}x{height}")
    if count != num_frames:
        return QualityReport(WRONG_FRAME_COUNT, f"the video has {count} frames, not {num_frames}")
    metrics = measure(frames)
    if metrics["p99_luma"] < BLACK_P99:
        return QualityReport(BLACK, "the video is black", metrics)
    if metrics["spatial_std"] < BLANK_STD:
        return QualityReport(BLANK, "the video is blank", metrics)
    if count > 1 and metrics["motion"] < FROZEN_MOTION:
        return QualityReport(FROZEN, "the video does not move", metrics)
    return QualityReport(None, "ok", metrics)


def check_video_file(path: Path, *, width: int, height: int, num_frames: int) -> QualityReport:
    """Decodes the written file back and checks what a viewer would get."""
    try:
        decoded = video.read_mp4(path)
    except video.VideoDecodeError:
        return QualityReport(UNDECODABLE, "the video file does not decode")
    return check_frames(decoded.frames, width=width, height=height, num_frames=num_frames)


def check_audio_file(
    path: Path, *, duration_seconds: float, tolerance_s: float = AUDIO_LENGTH_TOLERANCE_S
) -> QualityReport:
    """The audio track of a delivered MP4, when a sound was asked for (see the module doc)."""
    try:
        track = audio.read_audio(path)
    except audio.AudioError:
        return QualityReport(NO_AUDIO, "the sound does not decode")
    if track is None:
        return QualityReport(NO_AUDIO, "the video has no sound")
    metrics = {"audio_seconds": round(track.duration_seconds, 4), "audio_rms_dbfs": round(track.rms_dbfs, 2)}
    if track.codec != "aac" or track.channels != "stereo":
        return QualityReport(
            WRONG_AUDIO_FORMAT, f"the sound is {track.codec} {track.channels}, not AAC stereo", metrics
        )
    if abs(track.duration_seconds - duration_seconds) > tolerance_s:
        return QualityReport(
            WRONG_AUDIO_LENGTH,
            f"the sound lasts {track.duration_seconds:.2f} s, not {duration_seconds:.2f} s",
            metrics,
        )
    if not track.rms_dbfs > SILENT_DBFS:
        return QualityReport(SILENT_AUDIO, "the sound is silent", metrics)
    return QualityReport(None, "ok", metrics)
