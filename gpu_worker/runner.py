"""The runner: one `GenerationJob` in, events out, an MP4 and a poster in storage.

It keeps models loaded between jobs (cached by route), keeps users' LoRA adapters loaded while the next
jobs use them, reports progress from `callback_on_step_end` (throttled) and checks for a cancel at every
denoising step. Nothing here knows about Dramatiq or Django: events go to an injected `sink`, cancel
flags come from an injected `cancel_checker`, files from an injected `storage`. The lock, timings,
reason codes and retry announcements are the executor's (gpu_worker/execution.py), shared with training;
this module holds the steps of a generation.

    runner = Runner(storage=LocalStorage(root), sink=events.append, model_root=Path("var/models"))
    event = runner.run(job)            # the terminal event: completed, or failed with a reason code
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpu_worker import audio, metrics, moderation, pipelines, quality, video, watermark
from gpu_worker.content_credentials import ContentCredentials
from gpu_worker.contract import (
    FAMILY_TINY_WAN,
    MODERATION,
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
    latent_tokens,
)
from gpu_worker.execution import (
    AfterGpu,
    BadInput,
    CancelChecker,
    EventSink,
    GpuExecutor,
    JobCanceled,
    JobEvents,
    JobKind,
    JobRun,
    free_memory,
)
from gpu_worker.settings import DEFAULT_LORA_HOTSWAP_RANK
from gpu_worker.speedups import apply_speedups
from gpu_worker.storage import MissingObject, ObjectTooLarge, Storage

logger = logging.getLogger(__name__)

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
MAX_SOUND_BYTES = 32 * 1024 * 1024  # a trend sound is at most a minute of 192 kb/s AAC (about 1.5 MB)
MAX_IMAGE_PIXELS = 40_000_000  # as the backend's UPLOAD_MAX_PIXELS
INPUT_REFUSED = "the photo is not allowed by our content rules"


# --- Events -----------------------------------------------------------------------------------


class EventEmitter(JobEvents):
    """Numbers and sends one generation run's events (gpu_worker/execution.py `JobEvents`)."""

    stage_progress = PROGRESS

    def progress(self, value: float, *, interval: float, force: bool = False) -> None:
        if self._progress_due(interval, force=force):
            self.send_best_effort(self.build("progress", stage=STAGE_DENOISING, progress=round(value, 4)))


# After running out of memory a generation runs once more with its VAE decoding in tiles and no other
# model loaded (`run.low_memory`); if that runs out too, OUT_OF_MEMORY is final on this worker.
GENERATION = JobKind(
    noun="job",
    job_class=GenerationJob,
    events=EventEmitter,
    retry_stage=STAGE_LOADING_MODEL,
    low_memory_retry=True,
)


# --- LoRA adapters ----------------------------------------------------------------------------


class LoraAdapters:
    """Users' LoRAs, applied per transformer and cached by storage key.

    A LoRA key names immutable weights (a new training writes a new key). An adapter stays loaded while
    jobs keep using it (at most `max_loaded` per transformer, least recently used dropped first); a job
    without a LoRA unloads them all, so it runs on the base weights. The raw weights of recent keys stay
    in CPU memory, so reloading one does not download it again.

    With `hotswap=True` (a route whose blocks are compiled: `apply(..., hotswap=True)`) a transformer has
    one adapter slot, `HOTSWAP_SLOT`: before its first LoRA, `enable_lora_hotswap(target_rank=hotswap_rank)`
    pads every adapter to that rank and turns the scalings into tensors; later users' LoRAs are loaded
    into the same slot with `load_lora_weights(..., hotswap=True)` (weights copied in place), and the
    job's scale (0 for a job without a LoRA) is written into the scaling tensors in place. The compiled
    blocks keep their shapes and guards: a new user's LoRA costs no recompilation (the first LoRA on a
    transformer, which adds the LoRA layers, compiles once; so does a LoRA of a rank above the slot's,
    which gets a fresh slot of its rank).
    """

    HOTSWAP_SLOT = "soul_id"

    def __init__(
        self,
        storage: Storage,
        *,
        max_loaded: int = 4,
        max_cached_weights: int = 4,
        hotswap_rank: int = DEFAULT_LORA_HOTSWAP_RANK,
    ) -> None:
        self.storage = storage
        self.max_loaded = max_loaded
        self.max_cached_weights = max_cached_weights
        self.hotswap_rank = hotswap_rank
        self._loaded: weakref.WeakKeyDictionary[Any, OrderedDict[str, str]] = weakref.WeakKeyDictionary()
        # transformer -> (key in its slot, the slot's padded rank, [(scaling tensor, value at scale 1)])
        self._slots: weakref.WeakKeyDictionary[Any, tuple[str, int, list[tuple[torch.Tensor, float]]]] = (
            weakref.WeakKeyDictionary()
        )
        self._weights: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()

    @staticmethod
    def adapter_name(key: str) -> str:
        return "lora_" + hashlib.sha1(key.encode()).hexdigest()[:16]  # noqa: S324 (a name, not security)

    def active(self, pipe: Any) -> list[str]:
        return list(self._loaded.get(pipe.transformer, {}))

    def hotswap_key(self, pipe: Any) -> str | None:
        """The key whose LoRA is in `pipe`'s hotswap slot (None: no slot)."""
        slot = self._slots.get(pipe.transformer)
        return None if slot is None else slot[0]

    def apply(self, pipe: Any, key: str | None, scale: float, *, hotswap: bool = False) -> None:
        if hotswap:
            self._apply_hotswap(pipe, key, scale)
            return
        loaded = self._loaded.setdefault(pipe.transformer, OrderedDict())
        if key is None:
            if loaded or pipe.transformer in self._slots:
                pipe.unload_lora_weights()
                loaded.clear()
                self._slots.pop(pipe.transformer, None)
            return
        if pipe.transformer in self._slots:  # leaving hotswap mode: back to plain adapters
            pipe.unload_lora_weights()
            self._slots.pop(pipe.transformer, None)
        name = self.adapter_name(key)
        if key not in loaded:
            weights = self._read(key)
            try:
                pipe.load_lora_weights(dict(weights), adapter_name=name)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    pipe.delete_adapters([name])
                if lora_does_not_fit(exc):
                    raise BadInput("the LoRA weights do not fit this model") from exc
                raise  # out of memory, a CUDA error, a bug: the executor classifies it
            loaded[key] = name
            while len(loaded) > self.max_loaded:
                _, oldest = loaded.popitem(last=False)
                pipe.delete_adapters([oldest])
        loaded.move_to_end(key)
        pipe.set_adapters([name], adapter_weights=[float(scale)])

    def _apply_hotswap(self, pipe: Any, key: str | None, scale: float) -> None:
        transformer = pipe.transformer
        loaded = self._loaded.get(transformer)
        if loaded:  # plain adapters from a run without compile: dropped (the slot starts afresh)
            pipe.unload_lora_weights()
            loaded.clear()
            self._slots.pop(transformer, None)
        slot = self._slots.get(transformer)
        if key is None:
            if slot is not None:
                _fill_scalings(slot[2], 0.0)  # base weights, same graph
            return
        if slot is None or slot[0] != key:
            weights = self._read(key)
            rank = lora_rank(weights)
            if slot is not None and rank > slot[1]:
                # above the slot's padded rank: a fresh slot of that rank (one recompilation)
                logger.warning(
                    "LoRA %s has rank %s > the hot-swap slot's %s: reloading the slot", key, rank, slot[1]
                )
                pipe.unload_lora_weights()
                self._slots.pop(transformer, None)
                slot = None
            swap = slot is not None
            if slot is not None:
                _fill_scalings(slot[2], 1.0)  # peft's swap skips a scaling equal to the new one
            target_rank = slot[1] if slot is not None else max(self.hotswap_rank, rank)
            try:
                if not swap:
                    pipe.enable_lora_hotswap(target_rank=target_rank, check_compiled="warn")
                pipe.load_lora_weights(dict(weights), adapter_name=self.HOTSWAP_SLOT, hotswap=swap)
            except Exception as exc:
                # the slot's weights may be half swapped: drop it (the next LoRA loads afresh)
                with contextlib.suppress(Exception):
                    pipe.unload_lora_weights()
                self._slots.pop(transformer, None)
                if lora_does_not_fit(exc):
                    raise BadInput("the LoRA weights do not fit this model") from exc
                raise
            # right after a load or a swap the scalings hold the adapter's own (scale 1.0)
            self._slots[transformer] = (key, target_rank, _slot_scalings(transformer, self.HOTSWAP_SLOT))
        _fill_scalings(self._slots[transformer][2], float(scale))

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


def lora_rank(weights: dict[str, torch.Tensor]) -> int:
    """The largest rank of a LoRA state dict (the rows of its `lora_A` matrices; 0 without any)."""
    return max((value.shape[0] for key, value in weights.items() if "lora_A" in key), default=0)


def _slot_scalings(transformer: Any, adapter: str) -> list[tuple[torch.Tensor, float]]:
    """The scaling tensors of `adapter` in every LoRA layer, with their values now (scale 1.0)."""
    found = []
    for module in transformer.modules():
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, dict) and isinstance(scaling.get(adapter), torch.Tensor):
            found.append((scaling[adapter], float(scaling[adapter])))
    if not found:
        raise RuntimeError(f"adapter {adapter!r} has no tensor scalings (enable_lora_hotswap not applied?)")
    return found


def _fill_scalings(scalings: list[tuple[torch.Tensor, float]], scale: float) -> None:
    """Sets the adapter's scale in place (a new Python float would be a new constant to the compiled
    blocks, i.e. a recompilation)."""
    with torch.no_grad():
        for tensor, base in scalings:
            tensor.fill_(base * scale)


def lora_does_not_fit(error: BaseException) -> bool:
    """Whether loading a LoRA failed because of the weights themselves (keys or shapes that are not
    this model's): the user's input, never retried. Out of memory, CUDA errors and other runtime errors
    are the worker's (OUT_OF_MEMORY, INTERNAL; gpu_worker/execution.py)."""
    if isinstance(error, ValueError | KeyError):
        return True
    if isinstance(error, RuntimeError) and not isinstance(error, torch.OutOfMemoryError):
        text = str(error)
        return "size mismatch" in text or "Error(s) in loading" in text
    return False


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
    """Runs generation jobs one at a time on the GPU (one GPU, one job; a job's encode, quality gate and
    upload run after it releases the GPU): `executor` is the GPU's, and a `Trainer` on this runner
    shares it with the runner's models."""

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
        audio_gate: Callable[..., quality.QualityReport] = quality.check_audio_file,
        warmup_shapes: Sequence[tuple[int, int, int]] | None = None,
        lora_hotswap_rank: int = DEFAULT_LORA_HOTSWAP_RANK,
        compile_options: Mapping[str, Any] | None = None,
        content_credentials: ContentCredentials | None = None,
    ) -> None:
        self.storage = storage
        self.executor = GpuExecutor(sink=sink, cancel_checker=cancel_checker)
        self.model_root = Path(model_root)
        self.device = device
        self.tiny_device = tiny_device
        self.progress_interval = progress_interval
        self.max_loaded_models = max_loaded_models
        self.quality_gate = quality_gate
        self.audio_gate = audio_gate
        # signs the AI label into every delivered MP4 (None: unlabelled, C2PA_DISABLED; the worker and the
        # embedded mode build it from gpu_worker/settings.py's LabelSettings)
        self.content_credentials = content_credentials
        self.models: OrderedDict[tuple[str, str, str], pipelines.VideoModel] = OrderedDict()
        self.lora = LoraAdapters(storage, hotswap_rank=lora_hotswap_rank)
        # the (width, height, num_frames) a compiled route is warmed up at by `preload` (None: its native
        # size in both orientations; `warmup_shapes_for`)
        self.warmup_shapes = None if warmup_shapes is None else tuple(warmup_shapes)
        # route name -> {"WxHxF": seconds of its one-step warm-up}, filled by `preload`
        self.warmups: dict[str, dict[str, float]] = {}
        # route name -> {"WxHxF": seconds of the decode part of its warm-up} (cudnn_benchmark only)
        self.warmup_decodes: dict[str, dict[str, float]] = {}
        # what `torch.compile` gets for a profile's compile_blocks (None: inductor, fullgraph; tests and
        # the CPU bench pass {"backend": "eager"})
        self.compile_options = None if compile_options is None else dict(compile_options)
        self._sped_up: weakref.WeakSet[Any] = weakref.WeakSet()  # pipelines a speed profile changed
        # pipeline -> its checkpoint's scheduler, kept while a route's override replaces it
        self._checkpoint_schedulers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        # called with a route's name once its model is loaded (gpu_worker/routes_held.py advertises it)
        self.on_model_loaded: Callable[[str], None] | None = None
        # the image classifier of jobs that ask for moderation (a small model: beside the video model)
        on_gpu = device.startswith("cuda") and torch.cuda.is_available()
        self.moderator = moderation.Moderator(self.model_root, device=device if on_gpu else "cpu")

    # Public API

    def run(self, job: GenerationJob | dict[str, Any], *, final_attempt: bool = True) -> JobEvent:
        """Runs a job and returns its terminal event (completed or failed), which it has sent.

        With `final_attempt=False` a retryable failure is not sent as terminal (the caller retries the
        job); a non-terminal event with the reason says a retry is coming.
        """
        return self.executor.run(GENERATION, job, self._generate, final_attempt=final_attempt)

    def report_failure(self, job_id: str, reason_code: str, message: str, *, attempt: int = 1) -> JobEvent:
        """Sends a terminal failure decided outside a run (a time limit, a refused message)."""
        return self.executor.report_failure(GENERATION, job_id, reason_code, message, attempt=attempt)

    def cancel_requested(self, job_id: str) -> bool:
        return self.executor.cancel_requested(job_id)

    @property
    def sink(self) -> EventSink:
        return self.executor.sink

    # The steps of one job

    def _generate(self, run: JobRun) -> AfterGpu:
        job: GenerationJob = run.job
        # 1. Check inputs
        run.check_cancel()
        try:
            pipelines.check_inputs(job)
        except ValueError as exc:  # ContractError included
            raise BadInput(str(exc)) from None
        run.timings["render"] = render_settings(job)
        run.events.stage(STAGE_LOADING_MODEL)
        with run.timed("load"):
            image = self._input_image(job)

        # 1b. Moderate the input photo, before any GPU time is spent on it
        verdicts: dict[str, Any] = {}
        if job.moderation is not None and image is not None:
            with run.timed("moderation"):
                verdicts["input"] = self.moderator.check(job.moderation, [image])
            if verdicts["input"]["flagged"]:
                return run.events.failed(
                    MODERATION, INPUT_REFUSED, moderation=verdicts, timings=run.rounded_timings()
                )

        # 2-4. Load, denoise, decode: the GPU's part
        rendered = [self._render(run, image, job.seed)]

        # 5-7. Encode, check and upload with the GPU lock released (the next job denoises meanwhile);
        # the frames are handed over (popped), so the tail frees them once encoded
        return run.after_gpu(lambda run: self._deliver(run, image, rendered.pop(), verdicts))

    def _render(self, run: JobRun, image: Any, seed: int) -> np.ndarray:
        """Steps 2-4 on the GPU (the caller holds the lock): the clip as uint8 frames (T, H, W, 3)."""
        job: GenerationJob = run.job
        events = run.events
        # 2. Load the model, apply the user's LoRA, the route's scheduler and its speed profile
        with run.timed("load"):
            if run.low_memory:
                self.unload_models(keep=job.route)
            model = self.load_model(job.route)
            pipe = model.pipeline_for(job)
            self.lora.apply(pipe, job.lora_key, job.lora_scale, hotswap=uses_lora_hotswap(job.route))
            self._apply_scheduler(job.route, pipe)
            self._apply_speed_profile(run, pipe)

        with vae_tiling(pipe) if run.low_memory else contextlib.nullcontext():
            # 3. Denoise (cancel checked at every step)
            events.stage(STAGE_DENOISING)
            generator = torch.Generator("cpu").manual_seed(seed)
            with run.timed("denoise"):
                latents = self._denoise(run, model, pipe, image, generator)

            # 4. Decode
            run.check_cancel()
            events.stage(STAGE_DECODING)
            with run.timed("decode"):
                decoded = model.decode(pipe, latents, generator, size=(job.width, job.height))
                frames = video.frames_to_uint8(np.asarray(decoded))
            del latents, decoded
        return frames

    def _deliver(
        self, run: JobRun, image: Any, frames: np.ndarray | None, verdicts: dict[str, Any] | None = None
    ) -> JobEvent:
        """Steps 5-7, without the GPU lock: encode (and mux the job's sound), quality gate (a refused
        clip is rendered once more with a new seed, on the GPU again; a refused sound fails the job, as a
        new seed would not change it), upload. A cancel seen up to the end of the upload wins."""
        job: GenerationJob = run.job
        events = run.events
        seed = job.seed
        video_path, poster_path = run.work / "video.mp4", run.work / "poster.jpg"
        sound_path = self._input_sound(run) if job.sound_key else None
        for quality_attempt in (1, 2):
            if frames is None:
                with run.gpu():
                    frames = self._render(run, image, seed)

            # frames for the output's moderation (6b), kept small: the clip itself is freed once encoded;
            # sampled before the visible mark, so the classifier sees what the model made
            sampled = moderation.sample_frames(frames, job.moderation.output_frames) if job.moderation else []

            # 5. Encode the video and the poster (with the tier's visible mark, if any)
            run.check_cancel()
            events.stage(STAGE_ENCODING)
            frames = self._watermark(run, frames)
            with run.timed("encode"):
                silent_path = run.work / "silent.mp4" if sound_path else video_path
                video.encode_mp4(frames, silent_path, fps=job.fps)
                video.write_jpeg(frames[video.poster_index(frames)], poster_path)
            frames = None
            if sound_path is not None:
                with run.timed("mux"):
                    audio.mux_sound(
                        silent_path, sound_path, video_path, duration_seconds=job.duration_seconds
                    )
            self._label(run, video_path)

            # 6. Quality gate on what the user would get: the MP4 decoded back
            run.check_cancel()
            events.stage(STAGE_QUALITY_CHECK)
            with run.timed("quality"):
                report = self.quality_gate(
                    video_path, width=job.width, height=job.height, num_frames=job.num_frames
                )
                sound_report = (
                    self.audio_gate(video_path, duration_seconds=job.duration_seconds)
                    if sound_path is not None and report.ok
                    else None
                )
            if sound_report is not None and not sound_report.ok:
                logger.warning(
                    "job %s: the sound failed the quality gate (%s)", job.job_id, sound_report.reason
                )
                return events.failed(
                    QUALITY_FAILED,
                    f"the video failed the quality check: {sound_report.message}",
                    timings=run.rounded_timings(),
                )
            if report.ok:
                break
            logger.warning("job %s: quality gate failed (%s) with seed %s", job.job_id, report.reason, seed)
            if quality_attempt == 2:
                return events.failed(
                    QUALITY_FAILED,
                    f"the video failed the quality check: {report.message}",
                    timings=run.rounded_timings(),
                )
            seed = next_seed(seed)
            events.stage(
                STAGE_QUALITY_CHECK,
                reason_code=QUALITY_FAILED,
                message=f"{report.message}; retrying with a new seed",
                seed=seed,
            )

        # 6b. Moderate the output; a flagged one is still uploaded, for staff to review (the backend
        # holds it back from the user)
        verdicts = dict(verdicts or {})
        if job.moderation is not None:
            with run.timed("moderation"):
                verdicts["output"] = self.moderator.check(job.moderation, sampled)
        del sampled

        # 7. Upload
        run.check_cancel()
        events.stage(STAGE_UPLOADING)
        with run.timed("upload"):
            video_bytes, poster_bytes = self._upload(
                run,
                (job.video_key, video_path, "video/mp4"),
                (job.poster_key, poster_path, "image/jpeg"),
            )

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
            "has_sound": sound_path is not None,
        }
        return run.completed(
            seconds_per_step=run.timings["denoise"]
            / ((job.route.steps + job.route.refine_steps) * quality_attempt),
            outputs=outputs,
            moderation=verdicts,
        )

    def _watermark(self, run: JobRun, frames: np.ndarray) -> np.ndarray:
        """Step 5 starts with the job's visible mark burnt into the frames' corner, when it asks for one."""
        text = run.job.watermark
        if not text:
            return frames
        with run.timed("watermark"):
            if not frames.flags.writeable:
                frames = frames.copy()
            return watermark.burn_watermark(frames, text)

    def _label(self, run: JobRun, video_path: Path) -> None:
        """Step 5 ends with the AI label (C2PA) signed into the MP4, before the quality gate checks it."""
        if self.content_credentials is None:
            return
        with run.timed("label"):
            route = run.job.route
            self.content_credentials.sign_mp4(video_path, route=route.name, family=route.family)

    def _upload(self, run: JobRun, *files: tuple[str, Path, str]) -> list[int]:
        """Writes (key, path, content type) files in order, checking for a cancel between them and after
        the last: a canceled job removes what it wrote, so it leaves no outputs behind."""
        written: list[str] = []
        sizes = []
        try:
            for key, path, content_type in files:
                run.check_cancel()
                sizes.append(self.storage.write_file(key, path, content_type=content_type))
                written.append(key)
            run.check_cancel()
        except JobCanceled:
            for key in written:
                try:
                    self.storage.delete(key)
                except Exception:
                    logger.warning(
                        "could not delete %s of canceled job %s", key, run.job.job_id, exc_info=True
                    )
            raise
        return sizes

    def _apply_scheduler(self, route: RouteSpec, pipe: Any) -> None:
        """Gives the pipeline the route's scheduler (a fresh one from config for every job: a scheduler
        keeps per-run state), or its checkpoint's own again when the route has no override."""
        checkpoint_scheduler = self._checkpoint_schedulers.get(pipe, pipe.scheduler)
        if route.scheduler:
            self._checkpoint_schedulers[pipe] = checkpoint_scheduler
        else:
            self._checkpoint_schedulers.pop(pipe, None)
        pipe.scheduler = pipelines.scheduler_for(route, checkpoint_scheduler)

    def _apply_speed_profile(self, run: JobRun, pipe: Any) -> None:
        """Puts the pipeline in the state its route's speed profile says and records what was applied.
        A route without a profile runs on diffusers' defaults, set again only where a profile was
        applied before (so a worker that never saw a profile never touches its pipelines)."""
        applied = self._speed_up(run.job.route, pipe)
        if applied is None:
            return
        if run.low_memory:
            applied["vae_tiling"] = True  # set on top of the profile for this run (vae_tiling below)
        run.timings["speed_profile"] = applied

    def _speed_up(self, route: RouteSpec, pipe: Any) -> dict[str, Any] | None:
        if not route.speed_profile and pipe not in self._sped_up:
            return None
        applied = apply_speedups(
            pipe, route.speedups, num_inference_steps=route.steps, compile_options=self.compile_options
        )
        if route.speed_profile:
            self._sped_up.add(pipe)
        else:
            self._sped_up.discard(pipe)
        return applied

    def _denoise(self, run: JobRun, model: Any, pipe: Any, image: Any, generator: Any) -> torch.Tensor:
        job: GenerationJob = run.job
        events = run.events
        # Progress counts the callbacks over every pass of the model (LTX's two-stage flow makes two), so
        # it only grows; a cancel is checked at every step of every pass.
        steps, done = model.denoise_steps(job), 0
        start, end = PROGRESS[STAGE_DENOISING], PROGRESS[STAGE_DECODING]

        def on_step_end(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
            nonlocal done
            done = min(done + 1, steps)
            events.progress(start + (end - start) * done / steps, interval=self.progress_interval)
            if self.cancel_requested(job.job_id):
                pipeline._interrupt = True  # belt and braces: the exception below is what stops it
                raise JobCanceled
            return callback_kwargs

        try:
            return model.denoise(
                pipe, job, image=image, generator=generator, callback=on_step_end, timings=run.timings
            )
        finally:
            # A raise from the callback skips the pipeline's own clean-up: free offload hooks here.
            pipe.maybe_free_model_hooks()

    def load_model(self, route: RouteSpec) -> pipelines.VideoModel:
        """The route's model, loaded once and kept (the least recently used goes past
        `max_loaded_models`); a training on this runner adapts the same one."""
        key = _model_key(route)
        if key in self.models:
            self.models.move_to_end(key)
            return self.models[key]
        while len(self.models) >= self.max_loaded_models:
            self.models.popitem(last=False)
            free_memory()
        device = self.tiny_device if route.family == FAMILY_TINY_WAN else self.device
        started = time.perf_counter()
        model = pipelines.load_model(route, model_root=self.model_root, device=device)
        metrics.model_loaded(route.name, time.perf_counter() - started)
        self.models[key] = model
        if self.on_model_loaded is not None:
            self.on_model_loaded(route.name)
        return model

    def loaded_route_names(self) -> list[str]:
        """The names of the routes whose models are loaded now."""
        return [name for name, _, _ in list(self.models)]

    def preload(self, routes: Sequence[RouteSpec]) -> list[str]:
        """Loads `routes` before the first job (at most `max_loaded_models` of them stay: the last ones);
        returns the names of those loaded now. One that cannot load is logged and skipped: a job on it
        loads it (or fails) as without preloading. A route whose speed profile compiles its blocks is
        then warmed up (`warm_up`): the blocks compile here, not in the first user's job; so is one whose
        profile turns on cuDNN's benchmark mode (its decoder's algorithm search)."""
        for route in routes:
            with self.executor.lock:
                try:
                    model = self.load_model(route)
                except Exception:
                    logger.exception("could not preload route %s", route.name)
                    continue
                if route.speedups.compile_blocks or route.speedups.cudnn_benchmark:
                    try:
                        self.warm_up(model, route)
                    except Exception:
                        logger.exception("could not warm up route %s", route.name)
        return [route.name for route in routes if _model_key(route) in self.models]

    def warm_up(self, model: pipelines.VideoModel, route: RouteSpec) -> dict[str, float]:
        """Runs one denoising step of each pass of `route` (its scheduler, speed profile and pipeline: the
        image-to-video one when the route is conditioned on an image) at each warm-up shape, latents out
        (no upload), so the compiled blocks are compiled for those shapes before the first job; with
        `cudnn_benchmark` it also decodes the first latent frames (cuDNN's algorithm search, recorded
        apart in `warmup_decodes`). Returns and records (`warmups`) the seconds per shape ("WxHxF"),
        the decode included. Call with the GPU lock held."""
        from PIL import Image

        seconds: dict[str, float] = {}
        for width, height, num_frames in warmup_shapes_for(route, self.warmup_shapes):
            job = GenerationJob(
                job_id="warmup",
                route=route,
                prompt="warm-up",
                negative_prompt="",
                seed=0,
                aspect_ratio="16:9" if width > height else "9:16" if width < height else "1:1",
                width=width,
                height=height,
                num_frames=num_frames,
                output_prefix="warmup",
                image_key="warmup/image.png" if route.image_conditioning else None,
            )
            image = Image.new("RGB", (width, height), (128, 128, 128)) if route.image_conditioning else None
            pipe = model.pipeline_for(job)
            self._apply_scheduler(route, pipe)
            self._speed_up(route, pipe)

            def one_step(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
                # the remaining steps of this pass are skipped; its latents come back as are (a two-stage
                # LTX model then upsamples them and runs one step of its refine pass, at that pass's shape)
                pipeline._interrupt = True
                return callback_kwargs

            generator = torch.Generator("cpu").manual_seed(0)
            shape = f"{width}x{height}x{num_frames}"
            started = time.monotonic()
            try:
                with torch.no_grad():
                    latents = model.denoise(
                        pipe, job, image=image, generator=generator, callback=one_step, timings={}
                    )
            finally:
                pipe.maybe_free_model_hooks()
            if route.speedups.cudnn_benchmark:
                # cuDNN's algorithm search for the decoder's convolutions at this shape, here rather than
                # in the first job: a few latent frames (Wan: the first, the second, and one with a full
                # causal cache) give every shape the whole clip's frame-by-frame decode meets.
                decoded = time.monotonic()
                with torch.no_grad():
                    model.decode(pipe, warm_up_latents(latents), None, size=(width, height))
                self.warmup_decodes.setdefault(route.name, {})[shape] = round(time.monotonic() - decoded, 3)
            del latents
            seconds[shape] = round(time.monotonic() - started, 3)
            logger.info("route %s warmed up at %s in %.1f s", route.name, shape, seconds[shape])
        self.warmups[route.name] = seconds
        return seconds

    def unload_models(self, *, keep: RouteSpec | None = None) -> None:
        """Drops every loaded model but `keep`'s (all without it) and frees their memory."""
        others = [key for key in self.models if keep is None or key != _model_key(keep)]
        for key in others:
            del self.models[key]
        if others:
            free_memory()

    def _input_sound(self, run: JobRun) -> Path:
        """The job's sound (an AAC M4A the backend normalized), in the run's work folder."""
        job: GenerationJob = run.job
        try:
            data = self.storage.read(job.sound_key, max_bytes=MAX_SOUND_BYTES)
        except MissingObject:
            raise BadInput("the trend's sound is missing") from None
        except ObjectTooLarge:
            raise BadInput("the trend's sound is too large") from None
        path = run.work / "sound.m4a"
        path.write_bytes(data)
        return path

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


LARGE_GPU_BYTES = 80 * 10**9  # an 80 GB card (H100, A100 80GB, H200) holds two 5B-class routes


def default_max_loaded_models(device: str) -> int:
    """GPU_MAX_LOADED_MODELS when unset: 2 on a GPU with 80 GB or more, else 1 (and 1 on a CPU)."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return 1
    return 2 if torch.cuda.get_device_properties(torch.device(device)).total_memory >= LARGE_GPU_BYTES else 1


@contextlib.contextmanager
def vae_tiling(pipe: Any) -> Iterator[None]:
    """The pipeline's VAE decodes in tiles (less memory) inside the block, then as it did before."""
    vae = pipe.vae
    was_tiling = bool(getattr(vae, "use_tiling", False))
    vae.enable_tiling()
    try:
        yield
    finally:
        if not was_tiling:
            vae.disable_tiling()


WARM_UP_LATENT_FRAMES = 3


def warm_up_latents(latents: torch.Tensor) -> torch.Tensor:
    """What a warm-up decodes: the first WARM_UP_LATENT_FRAMES latent frames of (B, C, F, H, W) latents
    (the Wan VAE decodes frame by frame: the first frame, the second and the third, whose causal cache is
    full, meet every convolution shape of the clip); other layouts whole."""
    return latents[:, :, :WARM_UP_LATENT_FRAMES] if latents.ndim == 5 else latents


def uses_lora_hotswap(route: RouteSpec) -> bool:
    """Whether a route's LoRAs are hot-swapped into one slot (its blocks are compiled and it takes LoRAs)."""
    return route.takes_lora and route.speedups.compile_blocks


def warmup_shapes_for(
    route: RouteSpec, shapes: Sequence[tuple[int, int, int]] | None = None
) -> list[tuple[int, int, int]]:
    """The (width, height, num_frames) a compiled route is warmed up at: `shapes` (GPU_WARMUP_SHAPES)
    when given, else the route's native size in both orientations at its native frame count (the sizes
    `output_size` gives its 16:9 and 9:16 jobs when the native size has that shape)."""
    if shapes:
        return list(dict.fromkeys(tuple(shape) for shape in shapes))
    return list(
        dict.fromkeys([(route.width, route.height, route.frames), (route.height, route.width, route.frames)])
    )


def _model_key(route: RouteSpec) -> tuple[str, str, str]:
    return (route.name, route.family, route.checkpoint)


def render_settings(job: GenerationJob) -> dict[str, Any]:
    """What a job renders with, recorded in its timings (`render`): its tier (None: a version-1 job, the
    route's own settings), size, steps (and the refine pass's), guidance and the cost (all steps x latent
    tokens)."""
    route = job.route
    tokens = latent_tokens(route.family, width=job.width, height=job.height, num_frames=job.num_frames)
    return {
        "tier": job.tier,
        "width": job.width,
        "height": job.height,
        "num_frames": job.num_frames,
        "fps": job.fps,
        "steps": route.steps,
        "refine_steps": route.refine_steps,
        "refine_strength": route.refine_strength,
        "guidance": route.guidance,
        "scheduler": route.scheduler.get("class") if route.scheduler else None,
        "latent_tokens": tokens,
        "cost": (route.steps + route.refine_steps) * tokens,
    }


def next_seed(seed: int) -> int:
    """A different, reproducible seed for a retry (the quality gate's, a diverged training's), below 2**31
    like the seeds users send (the API shows the seed a video was made with, and takes it back)."""
    return int.from_bytes(hashlib.sha256(str(seed).encode()).digest()[:4], "big") & 0x7FFFFFFF


__all__ = [
    "GENERATION",
    "BadInput",
    "CancelChecker",
    "EventEmitter",
    "EventSink",
    "JobCanceled",
    "LoraAdapters",
    "Runner",
    "default_max_loaded_models",
    "next_seed",
    "prepare_image",
]
