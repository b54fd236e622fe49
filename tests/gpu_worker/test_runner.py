"""The runner end to end on the real tiny-wan pipeline (CPU): a job message in, an MP4 and a poster in
storage, events out. Outputs are read back with the bundled ffmpeg and PIL, not with gpu_worker.video."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from gpu_worker.contract import (
    BAD_INPUT,
    CANCELED,
    INTERNAL,
    OUT_OF_MEMORY,
    QUALITY_FAILED,
    STAGE_DECODING,
    STAGE_DENOISING,
    STAGE_ENCODING,
    STAGE_LOADING_MODEL,
    STAGE_QUALITY_CHECK,
    STAGE_UPLOADING,
)
from gpu_worker.runner import GENERATION
from tests.fixtures.gpu import (
    decoded_frames,
    ffmpeg_stream_info,
    image_bytes,
    make_job,
    tiny_route,
    top_level_boxes,
)


def _outputs_under(storage, job) -> list[str]:
    folder = storage.root / job.output_prefix
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_job_message_becomes_an_h264_faststart_mp4_and_a_poster(runner, storage, event_log):
    job = make_job(width=48, height=80, num_frames=17, aspect_ratio="9:16")

    terminal = runner.run(job.to_message())

    assert terminal.kind == "completed", terminal
    video_path = storage.root / f"generations/{job.job_id}/a1/video.mp4"
    data = video_path.read_bytes()
    info = ffmpeg_stream_info(video_path)
    assert "h264 (High)" in info and "yuv420p" in info and "48x80" in info and "8 fps" in info, info
    boxes = top_level_boxes(data)
    assert boxes.index("moov") < boxes.index("mdat"), boxes
    frames = decoded_frames(video_path)
    assert frames.shape == (17, 80, 48, 3)
    with Image.open(storage.root / f"generations/{job.job_id}/a1/poster.jpg") as poster:
        assert (poster.format, poster.size, poster.mode) == ("JPEG", (48, 80), "RGB")
    assert (storage.root / ".meta" / f"{job.video_key}.json").read_text() == '{"content_type": "video/mp4"}'

    video_out, poster_out = terminal.outputs["video"], terminal.outputs["poster"]
    assert video_out == {
        "key": job.video_key,
        "content_type": "video/mp4",
        "bytes": len(data),
        "width": 48,
        "height": 80,
        "fps": 8,
        "num_frames": 17,
        "duration_seconds": 2.125,
    }
    assert poster_out["key"] == job.poster_key and poster_out["content_type"] == "image/jpeg"
    assert poster_out["bytes"] == (storage.root / job.poster_key).stat().st_size
    assert (terminal.outputs["seed"], terminal.outputs["route"]) == (job.seed, "tiny-wan")


def test_events_come_in_stage_order_with_rising_sequences_and_end_completed_with_timings(runner, event_log):
    job = make_job(route=tiny_route(steps=4))

    runner.run(job)

    events = event_log.of(job.job_id)
    sequences = [event.sequence for event in events]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    stages = [event.stage for event in events if event.kind == "stage"]
    assert stages == [
        STAGE_LOADING_MODEL,
        STAGE_DENOISING,
        STAGE_DECODING,
        STAGE_ENCODING,
        STAGE_QUALITY_CHECK,
        STAGE_UPLOADING,
    ]
    progress = [event.progress for event in events if event.kind == "progress"]
    assert len(progress) == 4  # one per step with throttling off
    assert progress == sorted(progress) and progress[0] > 0.05 and progress[-1] == pytest.approx(0.85)
    assert [event.progress for event in events] == sorted(event.progress for event in events)
    assert events[-1].kind == "completed" and events[-1].is_terminal and events[-1].progress == 1.0
    assert not any(event.is_terminal for event in events[:-1])
    timings = events[-1].timings
    assert set(timings) == {
        "load",
        "denoise",
        "decode",
        "encode",
        "label",  # the C2PA label signed into the MP4 (tests/gpu_worker/test_content_credentials.py)
        "quality",
        "upload",
        "total",
        "seconds_per_step",
        "render",  # what it rendered with: tier, size, steps (tests/gpu_worker/test_tiers.py)
    }
    assert all(value >= 0 for name, value in timings.items() if name != "render")
    assert timings["total"] >= sum(
        timings[k] for k in ("load", "denoise", "decode", "encode", "label", "quality", "upload")
    )
    assert timings["seconds_per_step"] == pytest.approx(timings["denoise"] / 4, abs=1e-3)


def test_progress_is_throttled(make_runner, event_log):
    runner = make_runner(progress_interval=3600)
    job = make_job(route=tiny_route(steps=4))
    runner.run(job)
    assert len([event for event in event_log.of(job.job_id) if event.kind == "progress"]) == 1


def test_the_same_job_gives_the_same_frames_and_the_pipeline_stays_loaded(runner, make_runner, storage):
    first = make_job(seed=11)
    second = make_job(seed=11)
    other_seed = make_job(seed=12)

    runner.run(first)
    model = next(iter(runner.models.values()))
    second_event = runner.run(second)
    runner.run(other_seed)

    assert next(iter(runner.models.values())) is model  # cached by route, not rebuilt
    assert second_event.timings["load"] < 0.05
    a, b, c = (decoded_frames(storage.root / job.video_key) for job in (first, second, other_seed))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # Another process builds the same weights from the fixed seed.
    fresh = make_job(seed=11)
    make_runner().run(fresh)
    assert np.array_equal(a, decoded_frames(storage.root / fresh.video_key))


def solid_image(width: int, height: int, colour: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def test_image_to_video_conditions_on_the_selfie(runner, storage):
    # The random tiny VAE keeps little of an image, so the two selfies differ as much as they can.
    storage.write("uploads/u1/selfie-a", solid_image(120, 90, (0, 0, 0)), content_type="image/png")
    storage.write(
        "uploads/u1/selfie-b", solid_image(120, 90, (255, 255, 255), "JPEG"), content_type="image/jpeg"
    )
    job_a = make_job(image_key="uploads/u1/selfie-a", width=32, height=48, aspect_ratio="9:16")
    job_b = make_job(image_key="uploads/u1/selfie-b", width=32, height=48, aspect_ratio="9:16")

    for job in (job_a, job_b):
        assert runner.run(job).kind == "completed"

    frames_a = decoded_frames(storage.root / job_a.video_key)
    frames_b = decoded_frames(storage.root / job_b.video_key)
    assert frames_a.shape == frames_b.shape == (9, 48, 32, 3)
    assert not np.array_equal(frames_a, frames_b)  # same seed and prompt: only the selfie differs
    t2v = make_job(width=32, height=48, aspect_ratio="9:16")
    runner.run(t2v)
    assert type(runner.models[("tiny-wan", "tiny-wan", "")].i2v).__name__ == "WanImageToVideoPipeline"
    assert not np.array_equal(frames_a, decoded_frames(storage.root / t2v.video_key))


class CountingStorage:
    def __init__(self, inner) -> None:
        self.inner = inner
        self.reads: list[str] = []
        self.root = inner.root
        self.name = inner.name

    def read(self, key, **kwargs):
        self.reads.append(key)
        return self.inner.read(key, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_users_lora_changes_the_output_is_cached_by_key_and_unloaded_after(make_runner, storage, lora_file):
    counting = CountingStorage(storage)
    runner = make_runner(storage=counting)
    storage.write("characters/c1/lora.safetensors", lora_file, content_type="application/octet-stream")
    base, with_lora, again, half, base_after = (
        make_job(seed=3),
        make_job(seed=3, lora_key="characters/c1/lora.safetensors"),
        make_job(seed=3, lora_key="characters/c1/lora.safetensors"),
        make_job(seed=3, lora_key="characters/c1/lora.safetensors", lora_scale=0.5),
        make_job(seed=3),
    )

    for job in (base, with_lora, again, half):
        assert runner.run(job).kind == "completed"
    pipe = runner.models[("tiny-wan", "tiny-wan", "")].t2v
    assert pipe.get_active_adapters() == [runner.lora.adapter_name("characters/c1/lora.safetensors")]
    assert runner.run(base_after).kind == "completed"

    frames = {
        job.job_id: decoded_frames(storage.root / job.video_key) for job in (base, with_lora, again, half)
    }
    assert not np.array_equal(frames[base.job_id], frames[with_lora.job_id])
    assert np.array_equal(frames[with_lora.job_id], frames[again.job_id])
    assert not np.array_equal(frames[with_lora.job_id], frames[half.job_id])  # the scale is applied
    assert np.array_equal(frames[base.job_id], decoded_frames(storage.root / base_after.video_key))
    assert counting.reads.count("characters/c1/lora.safetensors") == 1  # cached by key
    assert pipe.get_list_adapters() == {}  # unloaded for the job without a LoRA


class CancelAtStep:
    """Sets the job's cancel flag when the progress event of step `step` (1-based) is sent."""

    def __init__(self, cancel_flags, job_id: str, step: int, steps: int) -> None:
        self.cancel_flags, self.job_id, self.step, self.steps = cancel_flags, job_id, step, steps

    def __call__(self, event) -> None:
        expected = 0.05 + 0.8 * self.step / self.steps
        if (
            event.job_id == self.job_id
            and event.kind == "progress"
            and event.progress == pytest.approx(expected, abs=1e-3)
        ):
            self.cancel_flags.set(self.job_id)


def test_cancel_at_a_step_stops_within_that_step_and_the_next_job_still_works(
    runner, storage, event_log, cancel_flags
):
    steps, cancel_at = 6, 2
    job = make_job(route=tiny_route(steps=steps))
    event_log.listeners.append(CancelAtStep(cancel_flags, job.job_id, cancel_at, steps))
    runner.run(make_job())  # load the model first
    pipe = runner.models[("tiny-wan", "tiny-wan", "")].t2v
    forward_calls = []
    hook = pipe.transformer.register_forward_hook(lambda *args: forward_calls.append(1))

    terminal = runner.run(job)
    hook.remove()

    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", CANCELED, False)
    events = event_log.of(job.job_id)
    assert events[-1] == terminal
    assert len([e for e in events if e.kind == "progress"]) == cancel_at
    assert len(forward_calls) == cancel_at * 2  # classifier-free guidance: two passes per step
    assert STAGE_DECODING not in [e.stage for e in events]
    assert _outputs_under(storage, job) == []

    after, reference = make_job(seed=5), make_job(seed=5)
    assert runner.run(after).kind == "completed"
    assert pipe._interrupt is False
    from gpu_worker.runner import Runner

    Runner(storage=storage, sink=lambda e: None, model_root=storage.root, device="cpu").run(reference)
    assert np.array_equal(
        decoded_frames(storage.root / after.video_key), decoded_frames(storage.root / reference.video_key)
    )


def test_a_job_canceled_while_queued_never_loads_or_denoises(runner, storage, event_log, cancel_flags):
    job = make_job()
    cancel_flags.set(job.job_id)

    terminal = runner.run(job)

    assert (terminal.kind, terminal.reason_code) == ("failed", CANCELED)
    assert [e.kind for e in event_log.of(job.job_id)] == ["failed"]
    assert runner.models == {}
    assert _outputs_under(storage, job) == []


def _bad(**overrides):
    return lambda: make_job(**overrides)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_bad(width=40, height=32), "multiples of 16"),
        (_bad(num_frames=10), "num_frames must be 4*k+1"),
        (_bad(num_frames=1), "num_frames must be 4*k+1"),
        (_bad(num_frames=41), "more than tiny-wan renders"),
        (_bad(width=128, height=128), "larger than tiny-wan renders"),
        (_bad(image_key="uploads/u1/nothing-here"), "the input image is missing"),
        (_bad(image_key="uploads/u1/not-an-image"), "the input image cannot be read"),
        (
            _bad(route=tiny_route(image_conditioning=False), image_key="uploads/u1/selfie"),
            "takes no input image",
        ),
        (_bad(route=tiny_route(lora_support=False), lora_key="characters/c1/lora"), "takes no LoRA"),
        (
            _bad(route=tiny_route(lora_stacking=False), lora_key="characters/c1/lora"),
            "does not stack a LoRA on its checkpoint",
        ),
        (_bad(lora_key="characters/c1/missing"), "the LoRA weights are missing"),
        (_bad(lora_key="uploads/u1/not-an-image"), "not a safetensors file"),
    ],
)
def test_bad_input_fails_at_once_not_retryable_and_writes_nothing(runner, storage, event_log, build, message):
    storage.write("uploads/u1/not-an-image", b"GIF89a but not really", content_type="image/gif")
    storage.write("uploads/u1/selfie", image_bytes(64, 64, seed=1), content_type="image/png")
    job = build()

    terminal = runner.run(job)

    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", BAD_INPUT, False)
    assert message in terminal.message
    assert STAGE_DENOISING not in [e.stage for e in event_log.of(job.job_id)]
    assert _outputs_under(storage, job) == []


def test_a_malformed_job_message_is_refused_by_the_contract(runner):
    from gpu_worker.contract import ContractError

    message = make_job().to_message()
    message["seed"] = -1
    with pytest.raises(ContractError, match="seed"):
        runner.run(message)


class BlackOnFirstDecode:
    """The real tiny model, whose first `n` decodes come out black (what a broken VAE would give)."""

    def __init__(self, model, n: int) -> None:
        self.model, self.left = model, n
        self.route = model.route

    def pipeline_for(self, job):
        return self.model.pipeline_for(job)

    def denoise_steps(self, job):
        return self.model.denoise_steps(job)

    def denoise(self, pipe, job, **kwargs):
        return self.model.denoise(pipe, job, **kwargs)

    def decode(self, pipe, latents, generator, **kwargs):
        frames = self.model.decode(pipe, latents, generator, **kwargs)
        if self.left > 0:
            self.left -= 1
            return np.zeros_like(frames)
        return frames


def _prime_with(runner, wrapper):
    runner.run(make_job())
    key = ("tiny-wan", "tiny-wan", "")
    runner.models[key] = wrapper(runner.models[key])


def test_a_black_output_is_retried_once_with_a_new_seed_then_delivered(runner, storage, event_log):
    _prime_with(runner, lambda model: BlackOnFirstDecode(model, 1))
    job = make_job(seed=21)

    terminal = runner.run(job)

    assert terminal.kind == "completed"
    assert terminal.outputs["seed"] != 21
    retry = [e for e in event_log.of(job.job_id) if e.reason_code == QUALITY_FAILED]
    assert len(retry) == 1 and not retry[0].is_terminal
    assert (
        retry[0].stage == STAGE_QUALITY_CHECK
        and "black" in retry[0].message
        and "new seed" in retry[0].message
    )
    stages = [e.stage for e in event_log.of(job.job_id) if e.kind == "stage"]
    assert stages.count(STAGE_DENOISING) == 2 and stages.count(STAGE_UPLOADING) == 1
    delivered = decoded_frames(storage.root / job.video_key)
    assert delivered.mean() > 20  # not the black first try


def test_a_second_bad_output_fails_quality_not_retryable_and_delivers_nothing(runner, storage):
    _prime_with(runner, lambda model: BlackOnFirstDecode(model, 2))
    job = make_job(seed=21)

    terminal = runner.run(job)

    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", QUALITY_FAILED, False)
    assert "black" in terminal.message
    assert _outputs_under(storage, job) == []


class FailingDecode(BlackOnFirstDecode):
    def __init__(self, model, error: BaseException) -> None:
        super().__init__(model, 0)
        self.error = error

    def decode(self, pipe, latents, generator, **kwargs):
        raise self.error


@pytest.mark.parametrize(
    ("error", "reason", "retryable", "message"),
    [
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            OUT_OF_MEMORY,
            True,
            "out of memory",
        ),
        (RuntimeError("cuDNN error: something deep"), INTERNAL, True, "internal error"),
    ],
    ids=["out-of-memory", "unexpected"],
)
def test_gpu_failures_are_reported_retryable_without_internals(
    runner, storage, error, reason, retryable, message
):
    _prime_with(runner, lambda model: FailingDecode(model, error))
    job = make_job()

    terminal = runner.run(job)

    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", reason, retryable)
    assert message in terminal.message and "cuDNN" not in terminal.message and "GiB" not in terminal.message
    assert _outputs_under(storage, job) == []
    assert terminal.timings["denoise"] > 0  # what it spent before failing


def test_a_sink_failure_on_progress_is_tolerated_but_not_on_the_terminal_event(make_runner):
    sent = []

    def flaky(event):
        if event.kind in ("progress", "stage"):
            raise ConnectionError("broker down")
        sent.append(event)

    job = make_job()
    assert make_runner(sink=flaky).run(job).kind == "completed"
    assert [event.kind for event in sent] == ["completed"]

    def down(event):
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        make_runner(sink=down).run(make_job())


def test_prepare_image_crops_to_the_output_shape_without_stretching():
    from gpu_worker.runner import prepare_image

    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 40, 100))  # a blue band on the left: cropped away for a square
    buffer = io.BytesIO()
    wide.save(buffer, format="PNG")
    image = prepare_image(buffer.getvalue(), width=32, height=32)
    assert image.size == (32, 32) and image.mode == "RGB"
    assert np.asarray(image)[:, :, 2].max() < 10  # nothing blue is left


def test_prepare_image_reads_a_heic_selfie_and_turns_it_upright():
    import pillow_heif

    from gpu_worker.runner import prepare_image

    pillow_heif.register_heif_opener()
    portrait = Image.new("RGB", (48, 64), (200, 30, 30))
    buffer = io.BytesIO()
    portrait.save(buffer, format="HEIF")
    assert prepare_image(buffer.getvalue(), width=32, height=48).size == (32, 48)

    exif = Image.Exif()
    exif[0x0112] = 6  # camera held sideways: rotate 90 degrees on display
    landscape = Image.new("RGB", (64, 48), (0, 0, 0))
    landscape.paste((255, 255, 255), (0, 0, 64, 24))  # the top half is white as stored
    buffer = io.BytesIO()
    landscape.save(buffer, format="JPEG", exif=exif)
    upright = np.asarray(prepare_image(buffer.getvalue(), width=48, height=64)).mean(axis=(0, 2))
    assert upright[-8:].mean() > 200 and upright[:8].mean() < 50  # the white half is now on the right


# --- Out of memory: once more with less memory, then final -----------------------------------------


class OutOfMemoryOnDecode(BlackOnFirstDecode):
    """Runs out of memory in the first `failures` decodes; records whether the VAE decoded in tiles."""

    def __init__(self, model, failures: int) -> None:
        super().__init__(model, 0)
        self.failures = failures
        self.tiling: list[bool] = []

    def decode(self, pipe, latents, generator, **kwargs):
        self.tiling.append(pipe.vae.use_tiling)
        if len(self.tiling) <= self.failures:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().decode(pipe, latents, generator, **kwargs)


def test_out_of_memory_is_retried_once_in_process_with_vae_tiling_and_alone(make_runner, event_log):
    runner = make_runner(max_loaded_models=2)
    runner.load_model(tiny_route(name="tiny-other"))
    _prime_with(runner, lambda model: OutOfMemoryOnDecode(model, 1))
    wrapped = runner.models[("tiny-wan", "tiny-wan", "")]
    assert len(runner.models) == 2
    job = make_job()

    terminal = runner.run(job, final_attempt=False)

    assert terminal.kind == "completed"
    assert wrapped.tiling == [False, True]  # the second run decoded in tiles
    assert list(runner.models) == [("tiny-wan", "tiny-wan", "")]  # and with no other model loaded
    assert wrapped.model.pipeline_for(job).vae.use_tiling is False  # back as it was for the next job
    [retry] = [e for e in event_log.of(job.job_id) if e.reason_code == OUT_OF_MEMORY]
    assert (retry.kind, retry.stage, retry.retryable) == ("stage", STAGE_LOADING_MODEL, True)
    assert retry.message == "the GPU ran out of memory; retrying once with less memory"


def test_out_of_memory_after_the_low_memory_run_is_final_on_this_worker(runner, event_log):
    _prime_with(runner, lambda model: OutOfMemoryOnDecode(model, 2))
    wrapped = runner.models[("tiny-wan", "tiny-wan", "")]
    job = make_job()

    terminal = runner.run(job, final_attempt=False)  # attempts left: sent as terminal all the same

    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", OUT_OF_MEMORY, True)
    assert terminal.message == "the GPU ran out of memory (already retried once with less memory)"
    assert wrapped.tiling == [False, True]
    assert [e for e in event_log.of(job.job_id) if e.is_terminal] == [terminal]
    assert not runner.executor.retries_here(GENERATION, terminal, final_attempt=False)  # no blind rerun


# --- A user's LoRA that does not load: whose fault --------------------------------------------------


def _store_lora(storage, lora_file, change) -> str:
    from safetensors.torch import load, save

    key = "characters/c9/lora.safetensors"
    storage.write(key, save(change(load(lora_file))), content_type="application/octet-stream")
    return key


@pytest.mark.parametrize(
    "change",
    [
        lambda w: {k: torch.zeros(v.shape[0] + 3, v.shape[1]) if "lora_A" in k else v for k, v in w.items()},
        lambda w: {k.replace(".attn", ".zz"): v for k, v in w.items()},
    ],
    ids=["shape-mismatch", "unknown-modules"],
)
def test_a_lora_of_another_model_is_bad_input(runner, storage, lora_file, change):
    job = make_job(lora_key=_store_lora(storage, lora_file, change))

    terminal = runner.run(job)

    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", BAD_INPUT, False)
    assert terminal.message == "the LoRA weights do not fit this model"
    assert runner.run(make_job()).kind == "completed"  # nothing of it left on the model


@pytest.mark.parametrize(
    ("error", "reason", "message"),
    [
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 MiB"),
            OUT_OF_MEMORY,
            "ran out of memory",
        ),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), INTERNAL, "the GPU failed"),
        (
            RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling cublasGemmEx"),
            INTERNAL,
            "internal error",
        ),
    ],
    ids=["out-of-memory", "fatal-cuda", "other-runtime-error"],
)
def test_a_lora_that_fails_to_load_for_the_workers_reasons_is_retryable(
    runner, storage, lora_file, monkeypatch, error, reason, message
):
    job = make_job(lora_key=_store_lora(storage, lora_file, dict))
    runner.run(make_job())  # the model is loaded
    pipe = runner.models[("tiny-wan", "tiny-wan", "")].pipeline_for(job)

    def load_lora_weights(*args, **kwargs):
        raise error

    monkeypatch.setattr(pipe, "load_lora_weights", load_lora_weights)

    terminal = runner.run(job)

    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", reason, True)
    assert message in terminal.message
    assert pipe.get_list_adapters() == {}


# --- Models kept loaded -------------------------------------------------------------------------------


def test_preloaded_routes_are_loaded_before_the_first_job_and_stay(make_runner, monkeypatch):
    from gpu_worker import pipelines

    loads = []
    real_load = pipelines.load_model

    def load_model(route, **kwargs):
        loads.append(route.name)
        return real_load(route, **kwargs)

    monkeypatch.setattr(pipelines, "load_model", load_model)
    runner = make_runner(max_loaded_models=2)
    missing = tiny_route(name="wan22-missing", family="wan22", checkpoint="nowhere")

    loaded = runner.preload([tiny_route(name="tiny-a"), missing, tiny_route(name="tiny-b")])
    assert loaded == ["tiny-a", "tiny-b"]  # the missing checkpoint is logged and skipped

    for name in ("tiny-a", "tiny-b", "tiny-a"):
        assert runner.run(make_job(route=tiny_route(name=name))).kind == "completed"
    assert loads == ["tiny-a", "wan22-missing", "tiny-b"]  # no job loaded anything again


def test_past_max_loaded_models_the_least_recently_used_model_goes(make_runner):
    runner = make_runner(max_loaded_models=2)
    assert runner.preload([tiny_route(name=name) for name in ("tiny-a", "tiny-b", "tiny-c")]) == [
        "tiny-b",
        "tiny-c",
    ]
    runner.run(make_job(route=tiny_route(name="tiny-b")))
    runner.run(make_job(route=tiny_route(name="tiny-a")))
    assert [key[0] for key in runner.models] == ["tiny-b", "tiny-a"]


# --- A route's scheduler (a step-distilled checkpoint's) ------------------------------------------------

DISTILLED_SCHEDULER = {
    "class": "UniPCMultistepScheduler",
    "config": {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0},
}


def _pipe_of(runner, job):
    return runner.models[(job.route.name, job.route.family, job.route.checkpoint)].pipeline_for(job)


def test_a_routes_scheduler_replaces_the_checkpoints_for_its_jobs_only(make_runner):
    runner = make_runner(max_loaded_models=2)
    base = make_job(route=tiny_route())
    assert runner.run(base).kind == "completed"
    checkpoint_scheduler = _pipe_of(runner, base).scheduler
    distilled = make_job(route=tiny_route(name="tiny-distilled", scheduler=DISTILLED_SCHEDULER, guidance=1.0))

    assert runner.run(distilled).kind == "completed"

    scheduler = _pipe_of(runner, distilled).scheduler
    assert type(scheduler).__name__ == "UniPCMultistepScheduler"
    assert (scheduler.config.flow_shift, scheduler.config.use_flow_sigmas) == (3.0, True)
    # the rest of the checkpoint's config is kept
    assert scheduler.config.num_train_timesteps == checkpoint_scheduler.config.num_train_timesteps
    assert runner.run(base).kind == "completed"  # another route keeps its checkpoint's scheduler
    assert _pipe_of(runner, base).scheduler is checkpoint_scheduler


def test_a_route_whose_scheduler_override_is_removed_runs_on_its_checkpoints_scheduler_again(make_runner):
    runner = make_runner()
    first = make_job(route=tiny_route(scheduler=DISTILLED_SCHEDULER))
    assert runner.run(first).kind == "completed"
    assert type(_pipe_of(runner, first).scheduler).__name__ == "UniPCMultistepScheduler"

    edited = make_job(route=tiny_route())  # staff removed the override: the model stays loaded
    assert runner.run(edited).kind == "completed"

    scheduler = _pipe_of(runner, edited).scheduler
    assert type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert scheduler.config.shift == 7.0
