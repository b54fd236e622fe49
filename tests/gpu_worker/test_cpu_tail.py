"""The GPU never waits for a job's CPU tail (issue 12 item 4): encode, quality gate and upload run with
the GPU lock released, the next job denoises meanwhile, and the terminal event still says what happened.

Synchronised with events, never with sleeps: a storage whose write of one key blocks until the test lets
it go, a quality gate that does the same.
"""

from __future__ import annotations

import threading
import tracemalloc
from pathlib import Path

import numpy as np

from gpu_worker import quality, video
from gpu_worker.contract import CANCELED, INTERNAL, QUALITY_FAILED, STAGE_DENOISING, STAGE_UPLOADING
from gpu_worker.execution import GPU_FAULT_MESSAGE
from gpu_worker.runner import next_seed
from gpu_worker.storage import LocalStorage
from tests.fixtures.gpu import make_job

WAIT_S = 120  # a bound on each wait, never reached when the code works


class Gate:
    """A point one job stops at until the test releases it; records whether the GPU lock was held."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.released = threading.Event()
        self.lock_held_there: bool | None = None

    def stop_here(self, lock: threading.Lock) -> None:
        self.lock_held_there = lock.locked()
        self.reached.set()
        assert self.released.wait(WAIT_S)


class BlockingStorage(LocalStorage):
    """A local storage whose write of `blocked_key` waits at `gate`."""

    def __init__(self, root: Path, blocked_key: str, gate: Gate, lock: threading.Lock) -> None:
        super().__init__(root)
        self.blocked_key, self.gate, self.lock = blocked_key, gate, lock

    def write_file(self, key: str, path: Path, *, content_type: str) -> int:
        size = super().write_file(key, path, content_type=content_type)
        if key == self.blocked_key:
            self.gate.stop_here(self.lock)
        return size


def _runner_with_blocked_upload(make_runner, tmp_path, key_of):
    gate = Gate()
    runner = make_runner()
    job = make_job()
    runner.storage = BlockingStorage(tmp_path / "blocking", key_of(job), gate, runner.executor.lock)
    runner.lora.storage = runner.storage
    return runner, job, gate


def _in_thread(target, *args):
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("event", target(*args)))
    thread.start()
    return thread, result


def test_the_next_job_denoises_and_completes_while_the_previous_one_uploads(make_runner, tmp_path, event_log):
    runner, first, gate = _runner_with_blocked_upload(make_runner, tmp_path, lambda job: job.video_key)
    second = make_job(seed=8)

    thread, result = _in_thread(runner.run, first)
    assert gate.reached.wait(WAIT_S)  # the first job is uploading, and stays there
    assert gate.lock_held_there is False
    second_thread, second_result = _in_thread(runner.run, second)
    second_thread.join(WAIT_S)  # the whole second job runs while the first one's upload waits
    assert not second_thread.is_alive()
    gate.released.set()
    thread.join(WAIT_S)

    assert second_result["event"].kind == "completed"
    assert [e.stage for e in event_log.of(second.job_id) if e.kind == "stage"].count(STAGE_DENOISING) == 1
    terminals = [e.job_id for e in event_log.events if e.is_terminal]
    assert terminals == [second.job_id, first.job_id]  # the first job's ends after its upload
    event = result["event"]
    assert event.kind == "completed" and event_log.of(first.job_id)[-1] == event
    storage = runner.storage
    assert event.outputs["video"]["bytes"] == (storage.root / first.video_key).stat().st_size
    assert event.outputs["poster"]["bytes"] == (storage.root / first.poster_key).stat().st_size
    timings = event.timings
    for name in ("load", "denoise", "decode", "encode", "quality", "upload"):
        assert timings[name] > 0
    assert timings["total"] >= sum(timings[k] for k in ("denoise", "decode", "encode", "quality", "upload"))


def test_a_cancel_during_the_upload_wins_and_leaves_no_outputs(
    make_runner, tmp_path, cancel_flags, event_log
):
    runner, job, gate = _runner_with_blocked_upload(make_runner, tmp_path, lambda job: job.video_key)

    thread, result = _in_thread(runner.run, job)
    assert gate.reached.wait(WAIT_S)  # the video is written; the poster not yet
    cancel_flags.set(job.job_id)
    gate.released.set()
    thread.join(WAIT_S)

    assert (result["event"].kind, result["event"].reason_code) == ("failed", CANCELED)
    assert result["event"].outputs == {}
    assert not runner.storage.exists(job.video_key) and not runner.storage.exists(job.poster_key)
    assert STAGE_UPLOADING in [e.stage for e in event_log.of(job.job_id)]  # it was canceled while uploading


def test_a_cancel_during_the_quality_gate_wins_while_another_job_runs(make_runner, storage, cancel_flags):
    gate = Gate()
    runner = make_runner()
    job, other = make_job(), make_job(seed=9)

    def blocking_gate(path: Path, **kwargs) -> quality.QualityReport:
        if not gate.reached.is_set():  # the first job's gate (the other starts after it)
            gate.stop_here(runner.executor.lock)
        return quality.check_video_file(path, **kwargs)

    runner.quality_gate = blocking_gate
    thread, result = _in_thread(runner.run, job)
    assert gate.reached.wait(WAIT_S)
    assert gate.lock_held_there is False
    cancel_flags.set(job.job_id)
    assert runner.run(other).kind == "completed"  # the GPU was free for it
    gate.released.set()
    thread.join(WAIT_S)

    assert (result["event"].kind, result["event"].reason_code) == ("failed", CANCELED)
    assert not storage.exists(job.video_key) and not storage.exists(job.poster_key)


def test_a_quality_retry_renders_again_on_the_gpu_from_the_tail(make_runner, storage, event_log):
    runner = make_runner()
    job = make_job(seed=21)
    lock_held_in_gate: list[bool] = []
    lock_held_in_render: list[bool] = []
    render = runner._render

    def watched_render(run, image, seed):
        lock_held_in_render.append(runner.executor.lock.locked())
        return render(run, image, seed)

    def gate_refusing_the_first(path: Path, **kwargs) -> quality.QualityReport:
        lock_held_in_gate.append(runner.executor.lock.locked())
        if len(lock_held_in_gate) == 1:
            return quality.QualityReport(quality.BLACK, "the video is black")
        return quality.check_video_file(path, **kwargs)

    runner._render = watched_render
    runner.quality_gate = gate_refusing_the_first
    terminal = runner.run(job)

    assert terminal.kind == "completed" and terminal.outputs["seed"] != 21
    assert lock_held_in_gate == [False, False]
    assert lock_held_in_render == [True, True]  # the re-render took the GPU lock again
    (announced,) = [e for e in event_log.of(job.job_id) if e.reason_code == QUALITY_FAILED]
    assert announced.kind == "stage" and announced.seed == terminal.outputs["seed"] == next_seed(job.seed)
    assert storage.exists(job.video_key)


def test_a_re_render_after_another_job_broke_the_gpu_fails_retryable_for_another_worker(make_runner, storage):
    runner = make_runner()
    job = make_job()

    def gate_refusing_while_another_job_breaks_the_gpu(path: Path, **kwargs) -> quality.QualityReport:
        runner.executor.broken = "AcceleratorError: CUDA error: device-side assert triggered"
        return quality.QualityReport(quality.BLACK, "the video is black")

    runner.quality_gate = gate_refusing_while_another_job_breaks_the_gpu
    terminal = runner.run(job)

    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", INTERNAL, True)
    assert terminal.message == GPU_FAULT_MESSAGE
    assert not storage.exists(job.video_key)


def test_an_upload_that_fails_in_the_tail_is_a_retryable_failure(make_runner, storage, monkeypatch):
    runner = make_runner()

    def write_file(key, path, *, content_type):
        raise ConnectionError("the bucket is unreachable")

    monkeypatch.setattr(storage, "write_file", write_file)
    terminal = runner.run(make_job())

    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", INTERNAL, True)
    assert terminal.message == "internal error" and "upload" in terminal.timings


def test_each_job_tells_the_worker_when_its_gpu_work_is_done(make_runner):
    runner = make_runner()
    released: list[bool] = []
    runner.executor.on_gpu_released = lambda: released.append(runner.executor.lock.locked())

    assert runner.run(make_job()).kind == "completed"
    assert released == [False]


# --- The gate and the poster work frame by frame -------------------------------------------------


def _clip(frames: int = 24, height: int = 64, width: int = 96) -> np.ndarray:
    rng = np.random.default_rng(3)
    wide = rng.integers(30, 230, size=(height, width + frames, 3), dtype=np.uint8)
    return np.stack([wide[:, i : i + width] for i in range(frames)])


def _peak_bytes(function, *args, **kwargs) -> int:
    tracemalloc.start()  # numpy reports its array allocations to tracemalloc
    try:
        tracemalloc.reset_peak()
        function(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_quality_gate_and_the_poster_never_hold_a_float_copy_of_the_clip():
    clip = _clip()
    count, height, width, _ = clip.shape
    float_clip = clip.size * 4  # what astype(float32) of the whole clip would allocate

    gate_peak = _peak_bytes(quality.check_frames, clip, width=width, height=height, num_frames=count)
    poster_peak = _peak_bytes(video.poster_index, clip)

    assert gate_peak < float_clip / 4 and poster_peak < float_clip / 4  # a few frames' worth
    assert _peak_bytes(video.luma, clip) >= float_clip  # the measure does see such a copy


def test_the_frame_by_frame_measures_match_the_whole_clip_figures():
    clip = _clip()
    whole = video.luma(clip)  # the reference, computed the memory-hungry way

    metrics = quality.measure(clip)

    assert abs(metrics["p99_luma"] - float(np.percentile(whole, 99))) <= 1 / quality.LUMA_BINS
    assert np.isclose(metrics["mean_luma"], float(whole.mean()), atol=1e-5)
    assert np.isclose(metrics["spatial_std"], float(np.median(whole.reshape(len(clip), -1).std(axis=1))))
    assert np.isclose(metrics["motion"], float(np.abs(np.diff(whole, axis=0)).mean()), atol=1e-6)
    assert quality.measure(iter(list(clip))) == metrics  # any iterable of frames


def test_float_frames_become_uint8_frame_by_frame():
    rng = np.random.default_rng(5)
    frames = rng.uniform(-0.1, 1.1, size=(1, 6, 8, 10, 3)).astype(np.float32)

    converted = video.frames_to_uint8(frames)

    assert converted.dtype == np.uint8
    assert np.array_equal(converted, (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8))
