"""A trend's sound: an admin's upload probed, decoded and stored loudness-normalized as AAC.

Every trend sound plays at the same loudness, the one the short-video apps normalize to: -14 LUFS
integrated (ITU-R BS.1770, measured with pyloudnorm) with the true peak at or under -1 dBTP (4x oversampled,
so the peaks between samples count). A louder, peakier upload goes through a look-ahead limiter before
the gain is adjusted again; what is stored is checked once more after the AAC encode (the codec adds a
little overshoot) and scaled down if it went over. ffmpeg (the one imageio-ffmpeg bundles) decodes any
of MP3, AAC, WAV or M4A and encodes the result: stereo, 48 kHz, AAC in an M4A at `SOUND_BITRATE`.

The GPU worker reads the stored file by its key and muxes it into the delivered MP4
(gpu_worker/audio.py): the sound is stored through apps.storage, where the worker's inputs live.

    sound = sound_prepare(upload_bytes, max_seconds=60, max_bytes=10 * 1024 * 1024)
    storage.write(key, sound.data, content_type=SOUND_CONTENT_TYPE)
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 48_000
CHANNELS = 2
SOUND_BITRATE = "192k"
SOUND_CONTENT_TYPE = "audio/mp4"
SOUND_EXTENSION = "m4a"
# What ffmpeg calls the containers we take: MP3, raw AAC (ADTS), WAV, and MP4/M4A.
ACCEPTED_FORMATS = ("mp3", "aac", "wav", "mov,mp4,m4a,3gp,3g2,mj2")
SILENT_LUFS = -70.0  # BS.1770's absolute gate: quieter than this is silence
OVERSAMPLING = 4
LIMITER_WINDOW_S = 0.01
TRUE_PEAK_MARGIN_DB = 0.5  # the limiter's ceiling sits this far under the target (the encoder overshoots)
PROBE_TIMEOUT_S = 30
CODEC_TIMEOUT_S = 120


class SoundInvalid(ValueError):
    """The upload cannot be a trend's sound; the message is for the admin."""


@dataclass(frozen=True)
class PreparedSound:
    data: bytes  # the M4A to store
    duration_seconds: float
    loudness_lufs: float  # of the stored file, decoded back
    true_peak_dbtp: float  # of the stored file, decoded back
    source_format: str


def size_text(size: int) -> str:
    """10485760 -> "10 MB", 102400 -> "100 KB"."""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.3g} MB"
    return f"{size / 1024:.3g} KB"


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class Probe:
    format: str
    duration_seconds: float | None
    has_audio: bool


_INPUT = re.compile(r"^Input #0, (?P<format>.+?), from ", re.MULTILINE)
_DURATION = re.compile(r"Duration: (?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d(?:\.\d+)?)")
_AUDIO = re.compile(r"Stream #0:\d+.*?: Audio: ")


def probe(path: Path) -> Probe:
    """What ffmpeg says of a file's container, length and streams (there is no ffprobe in the bundle)."""
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=PROBE_TIMEOUT_S,
    )
    text = result.stderr
    found = _INPUT.search(text)
    if found is None:
        raise SoundInvalid("This file is not audio that can be read.")
    duration = _DURATION.search(text)
    seconds = int(duration["h"]) * 3600 + int(duration["m"]) * 60 + float(duration["s"]) if duration else None
    return Probe(format=found["format"], duration_seconds=seconds, has_audio=bool(_AUDIO.search(text)))


def decode(path: Path, *, max_seconds: float | None = None) -> np.ndarray:
    """The first audio stream as float32 (samples, 2) at 48 kHz; SoundInvalid when it does not decode."""
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0"]
    if max_seconds is not None:
        command += ["-t", f"{max_seconds + 1:.3f}"]  # a lying header cannot make us decode an hour
    command += ["-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(CHANNELS), "-ar", str(SAMPLE_RATE), "-"]
    result = subprocess.run(command, capture_output=True, timeout=CODEC_TIMEOUT_S)
    if result.returncode != 0:
        raise SoundInvalid("This audio file is damaged: it cannot be decoded.")
    samples = np.frombuffer(result.stdout, dtype=np.float32)
    if samples.size < CHANNELS * SAMPLE_RATE // 10:
        raise SoundInvalid("This audio file is damaged or empty: it decodes to almost nothing.")
    return samples[: samples.size - samples.size % CHANNELS].reshape(-1, CHANNELS).copy()


def encode_m4a(samples: np.ndarray) -> bytes:
    """Float32 (samples, 2) at 48 kHz to an AAC M4A (faststart)."""
    with tempfile.TemporaryDirectory(prefix="trend-sound-") as work:
        out = Path(work) / f"sound.{SOUND_EXTENSION}"
        result = subprocess.run(
            [
                ffmpeg_exe(),
                "-hide_banner",
                "-nostdin",
                "-v",
                "error",
                "-f",
                "f32le",
                "-ar",
                str(SAMPLE_RATE),
                "-ac",
                str(CHANNELS),
                "-i",
                "-",
                "-c:a",
                "aac",
                "-b:a",
                SOUND_BITRATE,
                "-movflags",
                "+faststart",
                str(out),
            ],  # fmt: skip
            input=np.ascontiguousarray(samples, dtype=np.float32).tobytes(),
            capture_output=True,
            timeout=CODEC_TIMEOUT_S,
        )
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg could not encode AAC: {result.stderr.decode(errors='replace')}")
        return out.read_bytes()


def loudness_lufs(samples: np.ndarray) -> float:
    """Integrated loudness (ITU-R BS.1770-4) in LUFS; -inf for silence."""
    import pyloudnorm

    return float(pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(samples.astype(np.float64)))


def _oversampled_peaks(samples: np.ndarray) -> np.ndarray:
    """Per sample, the largest absolute value of the 4x oversampled signal around it (all channels)."""
    from scipy.signal import resample_poly

    up = np.abs(resample_poly(samples, OVERSAMPLING, 1, axis=0)).max(axis=1)
    up = up[: len(samples) * OVERSAMPLING]
    return up.reshape(len(samples), OVERSAMPLING).max(axis=1)


def true_peak_dbtp(samples: np.ndarray) -> float:
    peak = float(_oversampled_peaks(samples).max()) if len(samples) else 0.0
    return 20 * np.log10(max(peak, 1e-12))


def limit(samples: np.ndarray, *, ceiling_dbtp: float) -> np.ndarray:
    """A look-ahead limiter: the gain falls smoothly ahead of every true peak over the ceiling, so no
    oversampled peak passes it, and stays at 1 elsewhere."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    ceiling = 10 ** (ceiling_dbtp / 20)
    need = np.minimum(1.0, ceiling / np.maximum(_oversampled_peaks(samples), 1e-12))
    window = 2 * int(LIMITER_WINDOW_S * SAMPLE_RATE) + 1
    # Every value of the moving minimum within half a window of t is at most need[t]; so is their mean.
    gain = uniform_filter1d(minimum_filter1d(need, size=window), size=window)
    return (samples * gain[:, None]).astype(np.float32)


def normalize(samples: np.ndarray, *, target_lufs: float, ceiling_dbtp: float) -> np.ndarray:
    """Gain to `target_lufs`, limited to `ceiling_dbtp` true peak (a few rounds: limiting lowers the
    loudness, so the gain goes up again)."""
    loudness = loudness_lufs(samples)
    if not np.isfinite(loudness) or loudness < SILENT_LUFS:
        raise SoundInvalid("This sound is silent.")
    out = samples
    for _ in range(4):
        out = (out * 10 ** ((target_lufs - loudness) / 20)).astype(np.float32)
        if true_peak_dbtp(out) > ceiling_dbtp:
            out = limit(out, ceiling_dbtp=ceiling_dbtp)
        loudness = loudness_lufs(out)
        if abs(loudness - target_lufs) < 0.2:
            break
    return out


def sound_prepare(
    content: bytes,
    *,
    max_seconds: float,
    max_bytes: int,
    target_lufs: float = -14.0,
    true_peak_dbtp_max: float = -1.0,
) -> PreparedSound:
    """Probes, decodes and normalizes an uploaded sound; SoundInvalid says what is wrong with it."""
    # 1. Check inputs: size, container, an audio stream, length
    if len(content) > max_bytes:
        raise SoundInvalid(f"The file is over {size_text(max_bytes)}.")
    with tempfile.TemporaryDirectory(prefix="trend-sound-") as work:
        source = Path(work) / "upload"
        source.write_bytes(content)
        probed = probe(source)
        if probed.format not in ACCEPTED_FORMATS or not probed.has_audio:
            raise SoundInvalid("Upload an MP3, AAC, WAV or M4A audio file.")
        if probed.duration_seconds is not None and probed.duration_seconds > max_seconds + 0.05:
            raise SoundInvalid(
                f"The sound is {probed.duration_seconds:.1f} s long; keep it to {max_seconds:g} s."
            )

        # 2. Decode (the header's length is checked again against what decodes)
        samples = decode(source, max_seconds=max_seconds)
    duration = len(samples) / SAMPLE_RATE
    if duration > max_seconds + 0.05:
        raise SoundInvalid(f"The sound is {duration:.1f} s long; keep it to {max_seconds:g} s.")

    # 3. Normalize, encode, and check what was stored (scaled down once if the encoder overshot)
    ceiling = true_peak_dbtp_max - TRUE_PEAK_MARGIN_DB
    normalized = normalize(samples, target_lufs=target_lufs, ceiling_dbtp=ceiling)
    for _ in range(3):
        data = encode_m4a(normalized)
        stored = _decode_bytes(data)
        peak = true_peak_dbtp(stored)
        if peak <= true_peak_dbtp_max:
            break
        normalized = (normalized * 10 ** ((true_peak_dbtp_max - peak - 0.2) / 20)).astype(np.float32)
    return PreparedSound(
        data=data,
        duration_seconds=round(len(stored) / SAMPLE_RATE, 3),
        loudness_lufs=round(loudness_lufs(stored), 2),
        true_peak_dbtp=round(peak, 2),
        source_format=probed.format,
    )


def _decode_bytes(data: bytes) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=f".{SOUND_EXTENSION}") as handle:
        handle.write(data)
        handle.flush()
        return decode(Path(handle.name))


def synthesize_tune(*, seed: int, seconds: float = 6.0, bpm: float = 112.0) -> np.ndarray:
    """A few seconds of music-like sound for the demo catalogue: a bass line, a chord pad and a plucked
    arpeggio in a minor key, with a kick on every beat; float32 (samples, 2) at 48 kHz, deterministic
    per `seed`."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    root = 110.0 * 2 ** (int(rng.integers(0, 7)) / 12)  # A2 up to E3
    scale = np.array([0, 3, 5, 7, 10, 12, 15])  # minor pentatonic, two octaves
    beat = 60.0 / bpm
    left = np.zeros(n)
    right = np.zeros(n)
    # chord pad: root, minor third, fifth, one chord per bar, slow attack
    progression = rng.choice([0, 5, 7, 3, 10], size=int(seconds / (4 * beat)) + 1)
    for bar, step in enumerate(progression):
        start, end = int(bar * 4 * beat * SAMPLE_RATE), min(n, int((bar + 1) * 4 * beat * SAMPLE_RATE))
        if start >= n:
            break
        tt = t[start:end] - t[start]
        envelope = np.minimum(1.0, tt / 0.3) * np.exp(-tt / 3.0)
        for offset, pan in ((0, 0.5), (3, 0.3), (7, 0.7)):
            freq = root * 2 ** ((step + offset + 12) / 12)
            tone = 0.08 * envelope * np.sin(2 * np.pi * freq * tt)
            left[start:end] += tone * (1 - pan)
            right[start:end] += tone * pan
    # plucked arpeggio on eighth notes and a bass note with a kick on every beat
    for index in range(int(seconds / (beat / 2))):
        start = int(index * beat / 2 * SAMPLE_RATE)
        end = min(n, start + int(0.4 * SAMPLE_RATE))
        tt = t[start:end] - t[start]
        freq = root * 4 * 2 ** (int(rng.choice(scale)) / 12)
        pluck = 0.12 * np.exp(-tt / 0.12) * np.sin(2 * np.pi * freq * tt)
        pan = 0.25 if index % 2 else 0.75
        left[start:end] += pluck * (1 - pan)
        right[start:end] += pluck * pan
        if index % 2 == 0:
            bass = 0.25 * np.exp(-tt / 0.25) * np.sin(2 * np.pi * root / 2 * tt)
            kick = 0.5 * np.exp(-tt / 0.06) * np.sin(2 * np.pi * (50 + 100 * np.exp(-tt / 0.03)) * tt)
            left[start:end] += bass + kick
            right[start:end] += bass + kick
    fade = np.minimum(1.0, np.minimum(t / 0.02, (seconds - t) / 0.3))
    return (np.stack([left, right], axis=1) * fade[:, None]).astype(np.float32)
