"""A delivered video's sound: the trend's track muxed into the MP4, and read back for the quality gate.

Runs in a job's CPU tail (gpu_worker/runner.py `_deliver`), after the GPU lock is released, with the
ffmpeg that imageio-ffmpeg bundles. The video stream is copied as encoded (no second H.264 encode); the
sound (already loudness-normalized by the backend, apps/trends/sound.py) is looped when shorter than the
clip, cut to the clip's length, faded out over its last FADE_OUT_S and encoded as AAC stereo at 48 kHz.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

FADE_OUT_S = 0.5
SAMPLE_RATE = 48_000
AAC_BITRATE = "160k"
FFMPEG_TIMEOUT_S = 120


class AudioError(Exception):
    """ffmpeg could not mux or read the sound."""


def mux_sound(
    video_path: Path,
    sound_path: Path,
    out_path: Path,
    *,
    duration_seconds: float,
    fade_out_s: float = FADE_OUT_S,
) -> None:
    """Writes `out_path`: the video of `video_path` (copied) with `sound_path` as an AAC stereo track of
    exactly `duration_seconds`, fading out over the last `fade_out_s` (at most half the clip)."""
    if duration_seconds <= 0:
        raise ValueError(f"the clip's length must be positive, got {duration_seconds}")
    fade = min(fade_out_s, duration_seconds / 2)
    length = f"{duration_seconds:.6f}"
    filters = f"atrim=0:{length},asetpts=N/SR/TB,afade=t=out:st={duration_seconds - fade:.6f}:d={fade:.6f}"
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
        "-i", str(video_path),
        "-stream_loop", "-1", "-i", str(sound_path),  # a sound shorter than the clip repeats
        "-map", "0:v:0", "-map", "1:a:0",
        "-c:v", "copy",
        "-af", filters,
        "-c:a", "aac", "-b:a", AAC_BITRATE, "-ac", "2", "-ar", str(SAMPLE_RATE),
        "-t", length,
        "-movflags", "+faststart",
        str(out_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, timeout=FFMPEG_TIMEOUT_S)
    if result.returncode != 0:
        raise AudioError(f"ffmpeg could not mux the sound: {result.stderr.decode(errors='replace')[-500:]}")


@dataclass(frozen=True)
class AudioTrack:
    codec: str  # "aac"
    channels: str  # "stereo", "mono", ...
    samples: np.ndarray  # float32 (n, 2) at SAMPLE_RATE

    @property
    def duration_seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def rms_dbfs(self) -> float:
        if not len(self.samples):
            return float("-inf")
        rms = float(np.sqrt(np.mean(np.square(self.samples, dtype=np.float64))))
        return 20 * np.log10(rms) if rms > 0 else float("-inf")


_AUDIO_STREAM = re.compile(r"Stream #0:\d+.*?: Audio: (?P<codec>\w+).*?, \d+ Hz, (?P<channels>[^,]+),")


def read_audio(path: Path) -> AudioTrack | None:
    """The first audio stream of a media file, decoded; None when it has none."""
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    probe = subprocess.run(
        [exe, "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=FFMPEG_TIMEOUT_S,
    )
    stream = _AUDIO_STREAM.search(probe.stderr)
    if stream is None:
        return None
    decoded = subprocess.run(
        [exe, "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
         "-f", "f32le", "-acodec", "pcm_f32le", "-ac", "2", "-ar", str(SAMPLE_RATE), "-"],
        capture_output=True,
        timeout=FFMPEG_TIMEOUT_S,
    )  # fmt: skip
    if decoded.returncode != 0:
        raise AudioError(
            f"ffmpeg could not decode the sound: {decoded.stderr.decode(errors='replace')[-500:]}"
        )
    samples = np.frombuffer(decoded.stdout, dtype=np.float32)
    samples = samples[: samples.size - samples.size % 2].reshape(-1, 2)
    return AudioTrack(codec=stream["codec"], channels=stream["channels"].strip(), samples=samples)
