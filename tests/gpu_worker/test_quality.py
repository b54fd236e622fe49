"""The quality gate: blank, black, frozen, wrong size or count, undecodable; real tiny-wan output passes."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_worker import quality
from gpu_worker.video import encode_mp4
from tests.fixtures.gpu import make_job, tiny_route


def _moving_scene(frames: int = 9, height: int = 32, width: int = 48) -> np.ndarray:
    """A textured picture panning one pixel per frame: what a slow, real camera move looks like."""
    rng = np.random.default_rng(0)
    wide = rng.integers(40, 220, size=(height, width + frames, 3), dtype=np.uint8)
    return np.stack([wide[:, i : i + width] for i in range(frames)])


def _check(frames: np.ndarray, **expected) -> quality.QualityReport:
    count, height, width, _ = frames.shape
    return quality.check_frames(
        frames,
        width=expected.get("width", width),
        height=expected.get("height", height),
        num_frames=expected.get("num_frames", count),
    )


def test_a_moving_textured_clip_passes():
    report = _check(_moving_scene())
    assert report.ok and report.reason is None
    assert report.metrics["motion"] > quality.FROZEN_MOTION


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        (np.zeros((9, 32, 48, 3), np.uint8), quality.BLACK),
        (np.full((9, 32, 48, 3), 6, np.uint8), quality.BLACK),
        (np.full((9, 32, 48, 3), (30, 140, 200), np.uint8), quality.BLANK),
        (np.repeat(_moving_scene()[:1], 9, axis=0), quality.FROZEN),
    ],
    ids=["black", "nearly-black", "flat-colour", "one-still-repeated"],
)
def test_black_blank_and_frozen_clips_fail(frames, reason):
    report = _check(frames)
    assert report.reason == reason and not report.ok
    assert report.message.startswith("the video")


def test_a_dark_scene_with_a_light_in_it_is_not_black():
    frames = np.full((9, 32, 48, 3), 4, np.uint8)
    frames[:, 10:14, 20:40] = 240  # a lamp, moving
    for i in range(9):
        frames[i, 20 + i % 3, :] = 120
    assert _check(frames).ok


def test_wrong_size_and_frame_count_fail():
    frames = _moving_scene()
    assert _check(frames, width=64).reason == quality.WRONG_SIZE
    assert _check(frames, height=16).reason == quality.WRONG_SIZE
    assert _check(frames, num_frames=17).reason == quality.WRONG_FRAME_COUNT


def test_the_file_check_decodes_what_was_written(tmp_path):
    moving, frozen = tmp_path / "moving.mp4", tmp_path / "frozen.mp4"
    encode_mp4(_moving_scene(), moving, fps=8)
    encode_mp4(np.repeat(_moving_scene()[:1], 9, axis=0), frozen, fps=8)

    assert quality.check_video_file(moving, width=48, height=32, num_frames=9).ok
    assert (
        quality.check_video_file(moving, width=48, height=32, num_frames=13).reason
        == quality.WRONG_FRAME_COUNT
    )
    assert quality.check_video_file(frozen, width=48, height=32, num_frames=9).reason == quality.FROZEN


def test_an_undecodable_or_truncated_file_fails(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"not a video" * 50)
    truncated = tmp_path / "truncated.mp4"
    encode_mp4(_moving_scene(), truncated, fps=8)
    truncated.write_bytes(truncated.read_bytes()[:300])  # moov is first: this cuts the frames away

    for path in (garbage, truncated, tmp_path / "missing.mp4"):
        report = quality.check_video_file(path, width=48, height=32, num_frames=9)
        assert report.reason in (quality.UNDECODABLE, quality.WRONG_FRAME_COUNT), (path.name, report)
    assert quality.check_video_file(garbage, width=48, height=32, num_frames=9).reason == quality.UNDECODABLE


@pytest.mark.parametrize(("width", "height", "num_frames", "image"), [(32, 32, 9, False), (64, 64, 17, True)])
def test_real_tiny_wan_output_passes_honestly(runner, storage, width, height, num_frames, image):
    """Random weights give coloured noise: it moves and is not flat, so the gate lets it through."""
    from tests.fixtures.gpu import image_bytes

    storage.write("uploads/u/selfie", image_bytes(80, 80, seed=3), content_type="image/png")
    job = make_job(
        route=tiny_route(steps=2),
        width=width,
        height=height,
        num_frames=num_frames,
        image_key="uploads/u/selfie" if image else None,
    )
    assert runner.run(job).kind == "completed"
    report = quality.check_video_file(
        storage.root / job.video_key, width=width, height=height, num_frames=num_frames
    )
    assert report.ok
    assert report.metrics["spatial_std"] > 2 * quality.BLANK_STD
    assert report.metrics["motion"] > 4 * quality.FROZEN_MOTION
    assert report.metrics["p99_luma"] > 4 * quality.BLACK_P99
