"""The visible mark: a job's `watermark` text burnt into the bottom-right corner of every frame before
encoding, only when the job asks for it; an old message without the field is still accepted."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_worker.contract import ContractError, GenerationJob
from gpu_worker.watermark import burn_watermark, corner
from tests.fixtures.gpu import decoded_frames, make_job

TEXT = "AI generated"


def outside(frames: np.ndarray, box) -> np.ndarray:
    mask = np.ones(frames.shape[1:3], dtype=bool)
    mask[box.y0 : box.y1, box.x0 : box.x1] = False
    return frames[:, mask]


def inside(frames: np.ndarray, box) -> np.ndarray:
    return frames[:, box.y0 : box.y1, box.x0 : box.x1]


@pytest.mark.parametrize(("width", "height"), [(1280, 704), (704, 1280), (64, 64)])
def test_the_mark_changes_its_corner_and_no_other_pixel(width, height):
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, size=(3, height, width, 3), dtype=np.uint8)
    before = frames.copy()

    burn_watermark(frames, TEXT)

    box = corner(TEXT, width=width, height=height)
    assert width * 0.95 <= box.x1 <= width and height * 0.95 <= box.y1 <= height  # bottom right
    assert box.y0 > height * 0.8 and box.x0 > 0  # a small part of the frame
    assert np.array_equal(outside(frames, box), outside(before, box))
    changed = np.any(inside(frames, box) != inside(before, box), axis=-1)
    assert changed.mean() > 0.9  # the translucent plate darkens (nearly) every pixel under it


def test_the_mark_is_white_text_on_a_darker_plate():
    frames = np.full((1, 704, 1280, 3), 128, dtype=np.uint8)

    burn_watermark(frames, TEXT)

    region = inside(frames, corner(TEXT, width=1280, height=704))[0]
    assert region.min() < 90  # the plate
    assert region.max() > 220  # the letters


def test_frames_of_another_kind_are_refused():
    with pytest.raises(ValueError, match="uint8 frames"):
        burn_watermark(np.zeros((2, 8, 8, 3), dtype=np.float32), TEXT)


def test_a_job_with_a_watermark_delivers_it_in_the_corner_and_one_without_does_not(make_runner, storage):
    runner = make_runner()
    plain = make_job(width=64, height=64, num_frames=9)
    marked = make_job(width=64, height=64, num_frames=9, watermark=TEXT)

    assert runner.run(plain.to_message()).kind == "completed"
    terminal = runner.run(marked.to_message())

    assert terminal.kind == "completed", terminal
    assert "watermark" in terminal.timings
    without = decoded_frames(storage.root / plain.video_key).astype(np.int16)
    with_mark = decoded_frames(storage.root / marked.video_key).astype(np.int16)
    box = corner(TEXT, width=64, height=64)
    corner_change = np.abs(inside(with_mark, box) - inside(without, box)).mean()
    elsewhere_change = np.abs(outside(with_mark, box) - outside(without, box)).mean()
    # Same seed, same frames: the corner differs by the mark, the rest only by H.264's rounding near it.
    assert corner_change > 20, corner_change
    assert elsewhere_change < 2, elsewhere_change


def test_the_watermark_is_optional_in_the_message_and_checked_when_given():
    message = make_job().to_message()
    del message["watermark"]  # a message from a backend that predates the field
    assert GenerationJob.from_message(message).watermark is None

    for bad in ("", "   ", "x" * 41, "line\nbreak", 7):
        with pytest.raises(ContractError, match="watermark must be None or printable text"):
            GenerationJob.from_message({**message, "watermark": bad})
