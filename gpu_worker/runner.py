"""The runner: one `GenerationJob` in, events out, an MP4 and a poster in storage.

It keeps models loaded between jobs (cached by route), keeps users' LoRA adapters loaded while the next
jobs use them, reports progress from `callback_on_step_end` (throttled) and checks for a cancel at every
denoising step. Nothing here knows about Dramatiq or Django: events go to an injected `sink`, cancel
flags come from an injected `cancel_checker`, files from an injected `storage`.

    runner = Runner(storage=LocalStorage(root), sink=events.append, model_root=Path("var/models"))
    event = runner.run(job)            # the terminal event: completed, or failed with a reason code
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import logging
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpu_worker import pipelines, quality, video
from gpu_worker.contract import (
    BAD_INPUT,
    CANCELED,
    FAMILY_TINY_WAN,
    INTERNAL,
    MODEL_UNAVAILABLE,
    OUT_OF_MEMORY,
    QUALITY_FAILED,
    STAGE_DECODING,
    STAGE_DENOISING,
    STAGE_ENCODING,
    STAGE_LOADING_MODEL,
    STAGE_QUALITY_CHECK,
    STAGE_UPLOADING,
    GenerationJob,
    JobEvent,
    RouteSpec,
    is_retryable,
)
from gpu_worker.pipelines import ModelUnavailable
from gpu_worker.storage import MissingObject, ObjectTooLarge, Storage

logger = logging.getLogger(__name__)

EventSink = Callable[[JobEvent], None]
CancelChecker = Callable[[str], bool]

# Where each stage sits on the job's 0..1 progress.
PROGRESS = {
    STAGE_LOADING_MODEL: 0.0,
    STAGE_DENOISING: 0.05,
    STAGE_DECODING: 0.85,
    STAGE_ENCODING: 0.90,
    STAGE_QUALITY_CHECK: 0.94,
    STAGE_UPLOADING: 0.96,
}
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_LORA_BYTES = 1024 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000  # as the backend's UPLOAD_MAX_PIXELS


class JobCanceled(Exception):
    pass


class BadInput(Exception):
    """The job cannot run as asked; the message is safe to show."""


# --- Events -----------------------------------------------------------------------------------


class EventEmitter:
    """Numbers and sends one run's events.

    Sequences start at the current time in microseconds, so a later run of the same job (a retry, a
    redelivery on another worker) always numbers its events above every earlier run's.
    """

    def __init__(self, job_id: str, attempt: int, sink: EventSink) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.sink = sink
        self._sequence = time.time_ns() // 1_000
        self._last_progress_at: float | None = None

    def build(self, kind: str, **fields: Any) -> JobEvent:
        self._sequence += 1
        return JobEvent(
            job_id=self.job_id,
            sequence=self._sequence,
            kind=kind,
            attempt=self.attempt,
            emitted_at=time.time(),
            **fields,
        )

    def send(self, event: JobEvent) -> None:
        """Terminal events must arrive: a sink failure propagates (the broker then retries the job)."""
        self.sink(event)

    def send_best_effort(self, event: JobEvent) -> None:
        try:
            self.sink(event)
        except Exception:
            logger.warning("could not send a %s event of job %s", event.kind, self.job_id, exc_info=True)

    def stage(self, stage: str, **fields: Any) -> None:
        fields.setdefault("progress", PROGRESS[stage])
        self.send_best_effort(self.build("stage", stage=stage, **fields))

    def progress(self, value: float, *, interval: float, force: bool = False) -> None:
        now = time.monotonic()
        if force or self._last_progress_at is None or now - self._last_progress_at >= interval:
            self._last_progress_at = now
            self.send_best_effort(self.build("progress", stage=STAGE_DENOISING, progress=round(value, 4)))

    def failed(self, reason_code: str, message: str, **fields: Any) -> JobEvent:
        return self.build(
            "failed", reason_code=reason_code, retryable=is_retryable(reason_code), message=message, **fields
        )


# --- LoRA adapters ----------------------------------------------------------------------------


class LoraAdapters:
    """Users' LoRAs, applied per transformer and cached by storage key.

    A LoRA key names immutable weights (a new training writes a new key). An adapter stays loaded while
    jobs keep using it (at most `max_loaded` per transformer, least recently used dropped first); a job
    without a LoRA unloads them all, so it runs on the base weights. The raw weights of recent keys stay
    in CPU memory, so reloading one does not download it again.
    """

    def __init__(self, storage: Storage, *, max_loaded: int = 4, max_cached_weights: int = 4) -> None:
        self.storage = storage
        self.max_loaded = max_loaded
        self.max_cached_weights = max_cached_weights
        self._loaded: weakref.WeakKeyDictionary[Any, OrderedDict[str, str]] = weakref.WeakKeyDictionary()
        self._weights: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()

    @staticmethod
    def adapter_name(key: str) -> str:
        return "lora_" + hashlib.sha1(key.encode()).hexdigest()[:16]  # noqa: S324 (a name, not security)

    def active(self, pipe: Any) -> list[str]:
        return list(self._loaded.get(pipe.transformer, {}))

    def apply(self, pipe: Any, key: str | None, scale: float) -> None:
        loaded = self._loaded.setdefault(pipe.transformer, OrderedDict())
        if key is None:
            if loaded:
                pipe.unload_lora_weights()
                loaded.clear()
            return
        name = self.adapter_name(key)
        if key not in loaded:
            weights = self._read(key)
            try:
                pipe.load_lora_weights(dict(weights), adapter_name=name)
            except (ValueError, KeyError, RuntimeError) as exc:
                with contextlib.suppress(Exception):
                    pipe.delete_adapters([name])
                raise BadInput("the LoRA weights do not fit this model") from exc
            loaded[key] = name
            while len(loaded) > self.max_loaded:
                _, oldest = loaded.popitem(last=False)
                pipe.delete_adapters([oldest])
        loaded.move_to_end(key)
        pipe.set_adapters([name], adapter_weights=[float(scale)])

    def _read(self, key: str) -> dict[str, torch.Tensor]:
        if key in self._weights:
            self._weights.move_to_end(key)
            return self._weights[key]
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        try:
            data = self.storage.read(key, max_bytes=MAX_LORA_BYTES)
        except MissingObject:
            raise BadInput("the LoRA weights are missing") from None
        try:
            weights = load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError):
            raise BadInput("the LoRA weights are not a safetensors file") from None
        self._weights[key] = weights
        while len(self._weights) > self.max_cached_weights:
            self._weights.popitem(last=False)
        return weights


# --- Inputs -----------------------------------------------------------------------------------


def prepare_image(data: bytes, *, width: int, height: int) -> Any:
    """The selfie as an RGB image of exactly (width, height): EXIF-rotated, centre-cropped to the
    output's aspect ratio, then resized (so nothing is stretched)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    with contextlib.suppress(ImportError):
        import pillow_heif

        pillow_heif.register_heif_opener()
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_IMAGE_PIXELS:
                raise BadInput("the input image is too large")
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        raise BadInput("the input image cannot be read") from None
    return ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS)


# --- The runner -------------------------------------------------------------------------------


class Runner:
    """Runs generation jobs one at a time (one GPU, one job)."""

    def __init__(
        self,
        *,
        storage: Storage,
        sink: EventSink,
        model_root: Path,
        cancel_checker: CancelChecker | None = None,
        device: str = "cuda",
        tiny_device: str = "cpu",
        progress_interval: float = 0.25,
        max_loaded_models: int = 1,
        quality_gate: Callable[..., quality.QualityReport] = quality.check_video_file,
    ) -> None:
        self.storage = storage
        self.sink = sink
        self.model_root = Path(model_root)
        self.cancel_checker = cancel_checker or (lambda job_id: False)
        self.device = device
        self.tiny_device = tiny_device
        self.progress_interval = progress_interval
        self.max_loaded_models = max_loaded_models
        self.quality_gate = quality_gate
        self.models: OrderedDict[tuple[str, str, str], pipelines.VideoModel] = OrderedDict()
        self.lora = LoraAdapters(storage)
        self._lock = threading.Lock()  # one job at a time per runner: the pipelines are not thread-safe

    # Public API

    def run(self, job: GenerationJob | dict[str, Any], *, final_attempt: bool = True) -> JobEvent:
        """Runs a job and returns its terminal event (completed or failed), which it has sent.

        With `final_attempt=False` a retryable failure is not sent as terminal (the caller retries the
        job); a non-terminal event with the reason says a retry is coming.
        """
        if isinstance(job, dict):
            job = GenerationJob.from_message(job)
        events = EventEmitter(job.job_id, job.attempt, self.sink)
        with self._lock:
            outcome = self._execute(job, events)
        if outcome.kind == "failed" and outcome.retryable and not final_attempt:
            events.send_best_effort(
                events.build(
                    "stage",
                    stage=STAGE_LOADING_MODEL,
                    reason_code=outcome.reason_code,
                    retryable=True,
                    message=f"{outcome.message}; retrying",
                )
            )
            return outcome
        events.send(outcome)
        return outcome

    def report_failure(self, job_id: str, reason_code: str, message: str, *, attempt: int = 1) -> JobEvent:
        """Sends a terminal failure decided outside a run (a time limit, a refused message)."""
        events = EventEmitter(job_id, attempt, self.sink)
        event = events.failed(reason_code, message)
        events.send(event)
        return event

    def cancel_requested(self, job_id: str) -> bool:
        try:
            return bool(self.cancel_checker(job_id))
        except Exception:  # the flag store is down: keep going rather than fail the job
            logger.warning("could not read the cancel flag of job %s", job_id, exc_info=True)
            return False

    # The steps of one job

    def _execute(self, job: GenerationJob, events: EventEmitter) -> JobEvent:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="gpu-job-") as work:
                return self._generate(job, events, timings, Path(work), started)
        except JobCanceled:
            return events.failed(CANCELED, "canceled", timings=_rounded(timings))
        except BadInput as exc:
            return events.failed(BAD_INPUT, str(exc), timings=_rounded(timings))
        except ModelUnavailable as exc:
            logger.error("job %s: %s", job.job_id, exc)
            return events.failed(MODEL_UNAVAILABLE, "the model is not available on this worker")
        except torch.OutOfMemoryError:
            logger.warning("job %s ran out of GPU memory", job.job_id, exc_info=True)
            _free_memory()
            return events.failed(OUT_OF_MEMORY, "the GPU ran out of memory", timings=_rounded(timings))
        except Exception:
            logger.exception("job %s failed", job.job_id)
            return events.failed(INTERNAL, "internal error", timings=_rounded(timings))

    def _generate(
        self, job: GenerationJob, events: EventEmitter, timings: dict[str, float], work: Path, started: float
    ) -> JobEvent:
        # 1. Check inputs
        if self.cancel_requested(job.job_id):
            raise JobCanceled
        try:
            pipelines.check_inputs(job)
        except ValueError as exc:  # ContractError included
            raise BadInput(str(exc)) from None

        # 2. Load the model, fetch the inputs, apply the user's LoRA
        events.stage(STAGE_LOADING_MODEL)
        with _timed(timings, "load"):
            model = self._model(job.route)
            image = self._input_image(job)
            pipe = model.pipeline_for(job)
            self.lora.apply(pipe, job.lora_key, job.lora_scale)

        seed = job.seed
        for quality_attempt in (1, 2):
            # 3. Denoise (cancel checked at every step)
            events.stage(STAGE_DENOISING)
            generator = torch.Generator("cpu").manual_seed(seed)
            with _timed(timings, "denoise"):
                latents = self._denoise(job, events, model, pipe, image, generator)

            # 4. Decode
            self._check_cancel(job)
            events.stage(STAGE_DECODING)
            with _timed(timings, "decode"):
                frames = video.frames_to_uint8(np.asarray(model.decode(pipe, latents, generator)))
            del latents

            # 5. Encode the video and the poster
            self._check_cancel(job)
            events.stage(STAGE_ENCODING)
            video_path, poster_path = work / "video.mp4", work / "poster.jpg"
            with _timed(timings, "encode"):
                video.encode_mp4(frames, video_path, fps=job.fps)
                video.write_jpeg(frames[video.poster_index(frames)], poster_path)

            # 6. Quality gate on what the user would get: the MP4 decoded back
            events.stage(STAGE_QUALITY_CHECK)
            with _timed(timings, "quality"):
                report = self.quality_gate(
                    video_path, width=job.width, height=job.height, num_frames=job.num_frames
                )
            if report.ok:
                break
            logger.warning("job %s: quality gate failed (%s) with seed %s", job.job_id, report.reason, seed)
            if quality_attempt == 2:
                return events.failed(
                    QUALITY_FAILED,
                    f"the video failed the quality check: {report.message}",
                    timings=_rounded(timings),
                )
            seed = _next_seed(seed)
            events.stage(
                STAGE_QUALITY_CHECK,
                reason_code=QUALITY_FAILED,
                message=f"{report.message}; retrying with a new seed",
            )

        # 7. Upload
        self._check_cancel(job)
        events.stage(STAGE_UPLOADING)
        with _timed(timings, "upload"):
            video_bytes = self.storage.write_file(job.video_key, video_path, content_type="video/mp4")
            poster_bytes = self.storage.write_file(job.poster_key, poster_path, content_type="image/jpeg")

        timings["total"] = time.perf_counter() - started
        timings["seconds_per_step"] = timings["denoise"] / (job.route.steps * quality_attempt)
        outputs = {
            "video": {
                "key": job.video_key,
                "content_type": "video/mp4",
                "bytes": video_bytes,
                "width": job.width,
                "height": job.height,
                "fps": job.fps,
                "num_frames": job.num_frames,
                "duration_seconds": round(job.duration_seconds, 3),
            },
            "poster": {
                "key": job.poster_key,
                "content_type": "image/jpeg",
                "bytes": poster_bytes,
                "width": job.width,
                "height": job.height,
            },
            "seed": seed,
            "route": job.route.name,
        }
        return events.build("completed", progress=1.0, outputs=outputs, timings=_rounded(timings))

    def _denoise(
        self, job: GenerationJob, events: EventEmitter, model: Any, pipe: Any, image: Any, generator: Any
    ) -> torch.Tensor:
        steps = job.route.steps
        start, end = PROGRESS[STAGE_DENOISING], PROGRESS[STAGE_DECODING]

        def on_step_end(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
            events.progress(start + (end - start) * (step + 1) / steps, interval=self.progress_interval)
            if self.cancel_requested(job.job_id):
                pipeline._interrupt = True  # belt and braces: the exception below is what stops it
                raise JobCanceled
            return callback_kwargs

        kwargs = model.call_kwargs(job, image=image, generator=generator, callback=on_step_end)
        try:
            return pipe(**kwargs).frames
        finally:
            # A raise from the callback skips the pipeline's own clean-up: free offload hooks here.
            pipe.maybe_free_model_hooks()

    def _check_cancel(self, job: GenerationJob) -> None:
        if self.cancel_requested(job.job_id):
            raise JobCanceled

    def _model(self, route: RouteSpec) -> pipelines.VideoModel:
        key = (route.name, route.family, route.checkpoint)
        if key in self.models:
            self.models.move_to_end(key)
            return self.models[key]
        while len(self.models) >= self.max_loaded_models:
            self.models.popitem(last=False)
            _free_memory()
        device = self.tiny_device if route.family == FAMILY_TINY_WAN else self.device
        model = pipelines.load_model(route, model_root=self.model_root, device=device)
        self.models[key] = model
        return model

    def _input_image(self, job: GenerationJob) -> Any:
        if job.image_key is None:
            return None
        try:
            data = self.storage.read(job.image_key, max_bytes=MAX_IMAGE_BYTES)
        except MissingObject:
            raise BadInput("the input image is missing") from None
        except ObjectTooLarge:
            raise BadInput("the input image is too large") from None
        return prepare_image(data, width=job.width, height=job.height)


# --- Helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 4) for name, value in timings.items()}


def _next_seed(seed: int) -> int:
    """A different, reproducible seed for the quality-gate retry."""
    return int.from_bytes(hashlib.sha256(str(seed).encode()).digest()[:7], "big")


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = ["BadInput", "EventEmitter", "JobCanceled", "LoraAdapters", "Runner", "prepare_image"]
