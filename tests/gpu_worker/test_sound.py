"""A job with a sound: the trend's track muxed into the MP4 after the GPU is released (AAC stereo, the
clip's length, a fade-out), a silent video without one, and the quality gate's audio checks. Real ffmpeg,
the real tiny-wan pipeline; outputs are read back with the bundled ffmpeg, not with gpu_worker.audio."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from gpu_worker import quality
from gpu_worker.contract import (
    BAD_INPUT,
    QUALITY_FAILED,
    STAGE_DENOISING,
    STAGE_ENCODING,
    ContractError,
    GenerationJob,
)
from tests.fixtures.gpu import decoded_frames, make_job, tiny_route

SOUND_KEY = "trends/sounds/test.m4a"


def m4a(seconds: float, *, amplitude: float = 0.3, channels: int = 2) -> bytes:
    """An AAC M4A of a chord (440 + 554 Hz), made with ffmpeg's sine source; amplitude 0: silence."""
    sources = [
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=554:sample_rate=48000:duration={seconds}",
    ]  # fmt: skip
    mix = f"[0:a][1:a]amix=inputs=2,volume={amplitude * 4}"
    out = Path(subprocess.check_output(["mktemp", "--suffix=.m4a"]).decode().strip())
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *sources, "-filter_complex", mix,
         "-ac", str(channels), "-c:a", "aac", str(out)],
        check=True,
    )  # fmt: skip
    data = out.read_bytes()
    out.unlink()
    return data


def streams(path: Path) -> list[str]:
    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True
    )
    return [line.strip() for line in result.stderr.splitlines() if line.strip().startswith("Stream #")]


def audio_samples(path: Path) -> np.ndarray:
    raw = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "f32le",
         "-ac", "2", "-ar", "48000", "-"],
        capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.float32).reshape(-1, 2)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def test_a_job_with_a_sound_delivers_an_aac_stereo_track_of_the_clips_length(runner, storage):
    storage.write(SOUND_KEY, m4a(6.0), content_type="audio/mp4")
    job = make_job(width=48, height=80, num_frames=17, aspect_ratio="9:16", sound_key=SOUND_KEY)

    terminal = runner.run(job.to_message())

    assert terminal.kind == "completed", terminal
    assert terminal.outputs["has_sound"] is True
    assert "mux" in terminal.timings
    video_path = storage.root / job.video_key
    video_line, audio_line = streams(video_path)
    assert "Video: h264 (High)" in video_line and "48x80" in video_line
    assert "Audio: aac" in audio_line and "48000 Hz" in audio_line and "stereo" in audio_line, audio_line
    assert decoded_frames(video_path).shape == (17, 80, 48, 3)  # the video stream is untouched
    samples = audio_samples(video_path)
    assert abs(len(samples) / 48000 - job.duration_seconds) < 0.05  # 17 frames at 8 fps: 2.125 s
    # faded out: the last 50 ms are far quieter than the middle
    assert rms(samples[-2400:]) < 0.2 * rms(samples[48000:60000])
    assert terminal.outputs["video"]["bytes"] == video_path.stat().st_size


def test_a_sound_shorter_than_the_clip_repeats_to_its_end(runner, storage):
    storage.write(SOUND_KEY, m4a(0.8), content_type="audio/mp4")
    job = make_job(num_frames=17, sound_key=SOUND_KEY)

    terminal = runner.run(job)

    assert terminal.kind == "completed", terminal
    samples = audio_samples(storage.root / job.video_key)
    assert abs(len(samples) / 48000 - 2.125) < 0.05
    assert rms(samples[int(1.2 * 48000) : int(1.5 * 48000)]) > 0.05  # after the sound's own end


def test_a_job_without_a_sound_gives_a_video_with_no_audio_stream(runner, storage):
    job = make_job(num_frames=9)

    terminal = runner.run(job)

    assert terminal.kind == "completed", terminal
    assert terminal.outputs["has_sound"] is False
    lines = streams(storage.root / job.video_key)
    assert len(lines) == 1 and "Video:" in lines[0]


def test_the_gate_refuses_a_silent_track_and_delivers_nothing(runner, storage, event_log):
    storage.write(SOUND_KEY, m4a(3.0, amplitude=0.0), content_type="audio/mp4")
    job = make_job(num_frames=9, sound_key=SOUND_KEY)

    terminal = runner.run(job)

    assert (terminal.kind, terminal.reason_code) == ("failed", QUALITY_FAILED)
    assert terminal.message == "the video failed the quality check: the sound is silent"
    assert not storage.exists(job.video_key) and not storage.exists(job.poster_key)
    # no second render: a new seed would not change the sound
    stages = [e.stage for e in event_log.of(job.job_id) if e.kind == "stage"]
    assert stages.count(STAGE_DENOISING) == 1 and stages.count(STAGE_ENCODING) == 1, stages


def test_a_missing_sound_is_bad_input(runner, storage):
    job = make_job(num_frames=9, sound_key="trends/sounds/gone.m4a")

    terminal = runner.run(job)

    assert (terminal.kind, terminal.reason_code) == ("failed", BAD_INPUT)
    assert terminal.message == "the trend's sound is missing"


def _mux(tmp_path: Path, sound: bytes | None, *, seconds: float = 2.0) -> Path:
    """An MP4 of `seconds` of a test pattern, with `sound` as its audio (None: no audio stream)."""
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    out = tmp_path / "clip.mp4"
    command = [exe, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=32x32:rate=8:duration={seconds}"]
    if sound is not None:
        (tmp_path / "sound.m4a").write_bytes(sound)
        command += ["-i", str(tmp_path / "sound.m4a"), "-c:a", "copy"]
    subprocess.run([*command, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)], check=True)
    return out


@pytest.mark.parametrize(
    ("sound", "reason", "message"),
    [
        (None, quality.NO_AUDIO, "the video has no sound"),
        (lambda: m4a(2.0, amplitude=0.0), quality.SILENT_AUDIO, "the sound is silent"),
        (lambda: m4a(1.0), quality.WRONG_AUDIO_LENGTH, "the sound lasts 1.0"),
        (lambda: m4a(2.0, channels=1), quality.WRONG_AUDIO_FORMAT, "not AAC stereo"),
    ],
)
def test_the_audio_gate_refuses_a_missing_silent_short_or_mono_track(tmp_path, sound, reason, message):
    clip = _mux(tmp_path, sound() if sound else None)

    report = quality.check_audio_file(clip, duration_seconds=2.0)

    assert report.reason == reason
    assert message in report.message


def test_the_audio_gate_passes_a_track_of_the_clips_length(tmp_path):
    report = quality.check_audio_file(_mux(tmp_path, m4a(2.0)), duration_seconds=2.0)
    assert report.ok, report
    assert report.metrics["audio_rms_dbfs"] > -30


def test_the_sound_key_is_optional_in_the_message_and_checked_when_given():
    message = make_job().to_message()
    del message["sound_key"]  # a message from a backend that predates sounds
    assert GenerationJob.from_message(message).sound_key is None
    with pytest.raises(ContractError, match="sound_key"):
        make_job(sound_key="../etc/passwd")
    assert make_job(route=tiny_route(), sound_key=SOUND_KEY).to_message()["sound_key"] == SOUND_KEY
