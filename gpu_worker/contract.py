"""The job and event contract between the backend and the GPU workers.

Standard library only: both the Django backend and the GPU worker processes import this module, and
nothing else crosses the boundary. Messages carry `version`; a reader refuses a major version it does
not know instead of guessing. Queue and actor names that cross processes live here and nowhere else.

Compatibility: a reader ignores fields it does not know, so adding a field with a default keeps
`CONTRACT_VERSION`; removing or renaming a field, or changing what one means, bumps it.

The flow (see DESIGN.md): the backend sends a `GenerationJob` to a lane queue
(`generation_message_fields`); a GPU worker runs it and sends `JobEvent`s to `QUEUE_JOB_EVENTS` as
messages of actor `ACTOR_JOB_EVENT` (one positional argument: `JobEvent.to_message()`). To cancel, the
backend sets the Redis key `cancel_key(job_id)`; the worker checks it at every denoising step.

Identity training (Soul ID) works the same way: the backend sends a `TrainingJob` to QUEUE_GPU_TRAINING
(`training_message_fields`); the worker trains a LoRA on the photos and sends `JobEvent`s with
`job_type == JOB_TYPE_TRAINING` to the same QUEUE_JOB_EVENTS as messages of the same actor
`ACTOR_JOB_EVENT`: the backend has one job lifecycle, which routes every event by its `job_type`.
`cancel_key(character id)` stops a training within one step; the backend deletes that key before it
queues a new training of the same character.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any, TypedDict

CONTRACT_VERSION = 2
# Versions a reader accepts. Version 2 added `GenerationJob.tier` (required) with `route` rendered at that
# tier (`route_for_tier`); a version-1 job has no tier and means what it meant: the route's own settings.
SUPPORTED_VERSIONS: tuple[int, ...] = (1, 2)


class ContractError(ValueError):
    """A message that does not follow this contract."""


# --- Queues (Dramatiq queue names) ------------------------------------------------------------
# GPU lanes: consumed only by `python -m gpu_worker`. A GPU worker listens to every lane, so an idle
# GPU never waits while any lane has work; the lane decides the order inside the worker.
QUEUE_GPU_INSTANT = "gpu-instant"
QUEUE_GPU_ECONOMY = "gpu-economy"
QUEUE_GPU_TRAINING = "gpu-training"
GPU_QUEUES: tuple[str, ...] = (QUEUE_GPU_INSTANT, QUEUE_GPU_ECONOMY, QUEUE_GPU_TRAINING)

# Backend queue that receives the workers' events (consumed by Django workers).
QUEUE_JOB_EVENTS = "job-events"

# --- Actor names ------------------------------------------------------------------------------
ACTOR_RUN_GENERATION = "gpu_run_generation"
ACTOR_TRAIN_CHARACTER = "gpu_train_character"
ACTOR_JOB_EVENT = "backend_job_event"  # the events of every job, routed by their job_type

# --- Lanes (API.md SpeedLane) -----------------------------------------------------------------
LANE_INSTANT = "INSTANT"
LANE_ECONOMY = "ECONOMY"
LANE_QUEUES: dict[str, str] = {LANE_INSTANT: QUEUE_GPU_INSTANT, LANE_ECONOMY: QUEUE_GPU_ECONOMY}
# The generation lanes in the order a GPU worker serves them: a lower lane only when the higher is empty.
GENERATION_QUEUES_BY_PRIORITY: tuple[str, ...] = (QUEUE_GPU_INSTANT, QUEUE_GPU_ECONOMY)
# Every GPU lane in that order: training when no generation waits. A training that has waited longer
# than the worker's GPU_TRAINING_MAX_WAIT_S goes ahead of ECONOMY (never of INSTANT): see gpu_worker/lanes.py.
GPU_QUEUES_BY_PRIORITY: tuple[str, ...] = (*GENERATION_QUEUES_BY_PRIORITY, QUEUE_GPU_TRAINING)

# --- Route queues: a job goes to a worker that holds its route ----------------------------------
# A GPU worker consumes, for each generation lane, the queue of every route it preloads
# (`route_queue(lane queue, route name)`: `<lane queue>.<route name>`) before the plain lane
# (`gpu_queues_by_priority`), and while it holds such a route's model it advertises so in the broker's
# Redis: `route_held_key(route name)` set with a ROUTE_HELD_TTL_SECONDS expiry, refreshed on load and
# every ROUTE_HELD_REFRESH_SECONDS. The backend sends a job to its route's queue when that key exists,
# else to the plain lane, which every worker consumes (`generation_message_fields(..., route_held=)`).
ROUTE_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # the backend's ModelRoute.name rule
ROUTE_HELD_KEY_PREFIX = "gpu:route-held:"
ROUTE_HELD_TTL_SECONDS = 30
ROUTE_HELD_REFRESH_SECONDS = 10


def _require_route_name(route_name: Any) -> None:
    _require(
        isinstance(route_name, str) and bool(ROUTE_NAME_PATTERN.match(route_name)),
        f"a route name is lower-case letters, digits, dots, dashes and underscores, got {route_name!r}",
    )


def route_queue(lane_queue: str, route_name: str) -> str:
    """The queue of a generation lane's jobs on `route_name`, consumed by the workers that preload it."""
    _require(
        lane_queue in GENERATION_QUEUES_BY_PRIORITY,
        f"unknown generation lane queue {lane_queue!r}; expected one of {GENERATION_QUEUES_BY_PRIORITY}",
    )
    _require_route_name(route_name)
    return f"{lane_queue}.{route_name}"


def route_held_key(route_name: str) -> str:
    """The Redis key by which GPU workers advertise that one of them holds `route_name` loaded."""
    _require_route_name(route_name)
    return ROUTE_HELD_KEY_PREFIX + route_name


def gpu_queues_by_priority(held_routes: Sequence[str] = ()) -> tuple[str, ...]:
    """Every GPU queue a worker serving `held_routes` consumes, highest first: for each generation lane
    its routes' queues, then the lane itself; then training (GPU_QUEUES_BY_PRIORITY without routes)."""
    routes = tuple(dict.fromkeys(held_routes))
    generation = tuple(
        queue
        for lane_queue in GENERATION_QUEUES_BY_PRIORITY
        for queue in (*(route_queue(lane_queue, name) for name in routes), lane_queue)
    )
    return (*generation, QUEUE_GPU_TRAINING)


# --- Cancel flags -----------------------------------------------------------------------------
# The backend sets `cancel_key(job_id)` in the broker's Redis (any value) when a user cancels; a
# running job stops within one denoising step, a queued one fails CANCELED as soon as it starts.
CANCEL_KEY_PREFIX = "gpu:cancel:"
CANCEL_FLAG_TTL_SECONDS = 2 * 24 * 3600  # longer than any job waits in a lane


def cancel_key(job_id: str) -> str:
    return f"{CANCEL_KEY_PREFIX}{job_id}"


# --- Stages (API.md GenerationStage; PLANNING happens in the backend) -------------------------
STAGE_LOADING_MODEL = "LOADING_MODEL"
STAGE_DENOISING = "DENOISING"
STAGE_DECODING = "DECODING"
STAGE_ENCODING = "ENCODING"
STAGE_QUALITY_CHECK = "QUALITY_CHECK"
STAGE_UPLOADING = "UPLOADING"
STAGES: tuple[str, ...] = (
    STAGE_LOADING_MODEL,
    STAGE_DENOISING,
    STAGE_DECODING,
    STAGE_ENCODING,
    STAGE_QUALITY_CHECK,
    STAGE_UPLOADING,
)

# Stages of a training job: LOADING_MODEL above, then these (UPLOADING last, as for a generation).
STAGE_PREPARING = "PREPARING"  # reading and checking the photos
STAGE_TRAINING = "TRAINING"  # the optimisation steps (progress events carry step / total_steps / eta)
STAGE_SAVING = "SAVING"  # writing the safetensors file
TRAINING_STAGES: tuple[str, ...] = (
    STAGE_PREPARING,
    STAGE_LOADING_MODEL,
    STAGE_TRAINING,
    STAGE_SAVING,
    STAGE_UPLOADING,
)
ALL_STAGES: tuple[str, ...] = (*STAGES, *(stage for stage in TRAINING_STAGES if stage not in STAGES))

# --- Failure reasons --------------------------------------------------------------------------
# Retryable: the same job may succeed later or elsewhere (the backend retries with backoff, then
# tries the route's fallback). Not retryable: the job fails at once and the hold is released.
OUT_OF_MEMORY = "OUT_OF_MEMORY"
WORKER_LOST = "WORKER_LOST"  # set by the backend when a job's worker went silent
MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"  # this worker lacks the route's checkpoint folder or CUDA
TIMED_OUT = "TIMED_OUT"  # the job ran past the worker's time limit
INTERNAL = "INTERNAL"
BAD_INPUT = "BAD_INPUT"
MODERATION = "MODERATION"
# The output failed twice, a new seed included: a clip refused by the quality gate, a training whose loss
# diverged (NaN, infinite or exploding).
QUALITY_FAILED = "QUALITY_FAILED"
CANCELED = "CANCELED"
REASON_CODES: tuple[str, ...] = (
    OUT_OF_MEMORY,
    WORKER_LOST,
    MODEL_UNAVAILABLE,
    TIMED_OUT,
    INTERNAL,
    BAD_INPUT,
    MODERATION,
    QUALITY_FAILED,
    CANCELED,
)
RETRYABLE_REASONS: frozenset[str] = frozenset(
    {OUT_OF_MEMORY, WORKER_LOST, MODEL_UNAVAILABLE, TIMED_OUT, INTERNAL}
)


def is_retryable(reason_code: str) -> bool:
    return reason_code in RETRYABLE_REASONS


# --- Pipeline families and their size rules ---------------------------------------------------
FAMILY_TINY_WAN = "tiny-wan"  # random-weight Wan-shaped pipeline built from configs (CPU; tests, embedded)
FAMILY_WAN22 = "wan22"  # Wan 2.2 TI2V-5B (WanPipeline / WanImageToVideoPipeline, expand_timesteps)
FAMILY_LTX = "ltx"  # LTX-Video (LTXConditionPipeline)


@dataclass(frozen=True)
class FamilyRules:
    """What a family can render: width and height are multiples of `size_multiple` (VAE x patch size);
    `num_frames` is `frame_multiple * k + 1` (the VAE's temporal compression). `refines`: the family runs
    a render profile's refine pass (`RenderProfile.refine_steps`; LTX refines in its own two-stage flow
    instead, when its folder holds the latent upsampler)."""

    size_multiple: int
    frame_multiple: int
    refines: bool = False


FAMILIES: dict[str, FamilyRules] = {
    FAMILY_TINY_WAN: FamilyRules(size_multiple=16, frame_multiple=4, refines=True),
    FAMILY_WAN22: FamilyRules(size_multiple=32, frame_multiple=4, refines=True),
    FAMILY_LTX: FamilyRules(size_multiple=32, frame_multiple=8),
}

# --- Aspect ratios (API.md AspectRatio) and sizes ---------------------------------------------
ASPECT_RATIOS: dict[str, tuple[int, int]] = {"9:16": (9, 16), "1:1": (1, 1), "16:9": (16, 9)}
MAX_AREA_FACTOR = 2.0  # a job may ask for at most this many times the route's native pixel area
MAX_FRAME_FACTOR = 2.0  # ... and this many times its native frame count
MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**63 - 1


def output_size(
    aspect_ratio: str, *, native_width: int, native_height: int, size_multiple: int
) -> tuple[int, int]:
    """The (width, height) a route renders for an aspect ratio.

    When the route's native size already has that shape (within 15%), it is used as is, turned for
    portrait (Wan 2.2: 1280x704 and 704x1280); otherwise the native pixel area is kept and each side is
    rounded to the family's multiple (tiny-wan 64x64 at 16:9 gives 80x48).
    """
    if aspect_ratio not in ASPECT_RATIOS:
        raise ContractError(f"unknown aspect ratio {aspect_ratio!r}; expected one of {sorted(ASPECT_RATIOS)}")
    rw, rh = ASPECT_RATIOS[aspect_ratio]
    ratio = rw / rh
    long_side, short_side = max(native_width, native_height), min(native_width, native_height)
    if ratio != 1 and abs(long_side / short_side - max(ratio, 1 / ratio)) <= 0.15 * max(ratio, 1 / ratio):
        return (long_side, short_side) if ratio > 1 else (short_side, long_side)
    area = native_width * native_height

    def snap(value: float) -> int:
        return max(size_multiple, int(round(value / size_multiple)) * size_multiple)

    return snap(math.sqrt(area * ratio)), snap(math.sqrt(area / ratio))


def frames_for_duration(seconds: float, *, fps: int, frame_multiple: int) -> int:
    """The frame count closest to `seconds` at `fps` that a family can render (5 s at 24 fps: 121)."""
    if seconds <= 0 or fps <= 0:
        raise ContractError("duration and fps must be positive")
    return max(1, round(seconds * fps / frame_multiple)) * frame_multiple + 1


def _check_version(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ContractError(f"a {what} message must be a dict, got {type(data).__name__}")
    version = data.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise ContractError(
            f"unsupported {what} version {version!r}; "
            f"this side speaks {', '.join(map(str, SUPPORTED_VERSIONS))}"
        )
    return data


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


# --- Speed profiles (a route's speed-ups; applied by gpu_worker/speedups.py) ---------------------
# What each field turns on, and through which diffusers hook: gpu_worker/speedups.py. Here: the values a
# profile may hold, checked the same way by the backend (a route's admin) and by the worker.

# Backends that run from what is installed (no Hub download). Those whose package is missing fail in
# `apply_speedups` with diffusers' own message; the profile itself is still valid.
ATTENTION_BACKENDS: tuple[str, ...] = (
    "native",
    "_native_cudnn",
    "_native_efficient",
    "_native_flash",
    "_native_math",
    "flex",
    "flash",
    "flash_varlen",
    "_flash_3",
    "_flash_varlen_3",
    "sage",
    "sage_varlen",
    "xformers",
)
CACHE_FIRST_BLOCK = "first_block"
CACHE_MAG = "mag"
CACHE_TAYLORSEER = "taylorseer"
CACHES: tuple[str, ...] = (CACHE_FIRST_BLOCK, CACHE_MAG, CACHE_TAYLORSEER)

# Each cache's parameters: name -> (kind, default). Kinds: "pos_float", "ratio", "pos_int", "nonneg_int",
# "opt_pos_int", "bool", "floats" (a list of positive numbers) or "order" (1..4).
CACHE_PARAMS: dict[str, dict[str, tuple[str, Any]]] = {
    CACHE_FIRST_BLOCK: {"threshold": ("pos_float", 0.05)},
    CACHE_MAG: {
        "threshold": ("pos_float", 0.06),
        "max_skip_steps": ("pos_int", 3),
        "retention_ratio": ("ratio", 0.2),
        "mag_ratios": ("floats", None),
        "calibrate": ("bool", False),
    },
    CACHE_TAYLORSEER: {
        "cache_interval": ("pos_int", 5),
        "disable_cache_before_step": ("nonneg_int", 3),
        "disable_cache_after_step": ("opt_pos_int", None),
        "max_order": ("order", 1),
        "lite": ("bool", True),
    },
}
# The precisions the VAE's decoder may run in (`vae_decode_dtype`; null: as the route loads it, float32
# for Wan 2.2).
VAE_DECODE_DTYPES: tuple[str, ...] = ("float32", "bfloat16")
_SPEED_PROFILE_FIELDS = (
    "attention_backend",
    "compile_blocks",
    "cache",
    "cache_params",
    "vae_tiling",
    "tf32",
    "vae_decode_dtype",
    "cudnn_benchmark",
)


def _check_cache_param(cache: str, name: str, kind: str, value: Any) -> Any:
    where = f"cache_params.{name} of cache {cache!r}"
    if kind == "pos_float" and _is_number(value) and value > 0:
        return float(value)
    if kind == "ratio" and _is_number(value) and 0 <= value <= 1:
        return float(value)
    if kind == "pos_int" and _is_int(value) and value >= 1:
        return value
    if kind == "nonneg_int" and _is_int(value) and value >= 0:
        return value
    if kind == "opt_pos_int" and (value is None or (_is_int(value) and value >= 1)):
        return value
    if kind == "order" and _is_int(value) and 1 <= value <= 4:
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "floats" and value is None:
        return None
    if (
        kind == "floats"
        and isinstance(value, list | tuple)
        and len(value) >= 2
        and all(_is_number(v) and v > 0 for v in value)
    ):
        return tuple(float(v) for v in value)
    expected = {
        "pos_float": "a number > 0",
        "ratio": "a number in 0..1",
        "pos_int": "an integer >= 1",
        "nonneg_int": "an integer >= 0",
        "opt_pos_int": "null or an integer >= 1",
        "order": "an integer in 1..4",
        "bool": "true or false",
        "floats": "null or a list of at least 2 numbers > 0",
    }[kind]
    raise ValueError(f"{where} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class SpeedProfile:
    """What to speed up on a pipeline. The default is diffusers' default: nothing."""

    attention_backend: str | None = None
    compile_blocks: bool = False
    cache: str | None = None
    cache_params: Mapping[str, Any] = field(default_factory=dict)
    vae_tiling: bool = False
    tf32: bool = False
    vae_decode_dtype: str | None = None
    cudnn_benchmark: bool = False

    def __post_init__(self) -> None:
        backend = self.attention_backend
        if backend is not None and (
            not isinstance(backend, str) or backend.lower() not in ATTENTION_BACKENDS
        ):
            raise ValueError(
                f"attention_backend must be null or one of {', '.join(ATTENTION_BACKENDS)}, got {backend!r}"
            )
        if backend is not None:
            object.__setattr__(self, "attention_backend", backend.lower())
        for name in ("compile_blocks", "vae_tiling", "tf32", "cudnn_benchmark"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.vae_decode_dtype is not None and self.vae_decode_dtype not in VAE_DECODE_DTYPES:
            raise ValueError(
                f"vae_decode_dtype must be null or one of {', '.join(VAE_DECODE_DTYPES)}, "
                f"got {self.vae_decode_dtype!r}"
            )
        if self.cache is not None and self.cache not in CACHES:
            raise ValueError(f"cache must be null or one of {', '.join(CACHES)}, got {self.cache!r}")
        if not isinstance(self.cache_params, Mapping):
            raise ValueError(f"cache_params must be a mapping, got {type(self.cache_params).__name__}")
        if self.cache is None:
            if self.cache_params:
                raise ValueError("cache_params are given but no cache is chosen")
            object.__setattr__(self, "cache_params", {})
            return
        known = CACHE_PARAMS[self.cache]
        unknown = sorted(set(self.cache_params) - set(known))
        if unknown:
            raise ValueError(
                f"unknown cache_params for cache {self.cache!r}: {', '.join(map(str, unknown))}; "
                f"expected some of {', '.join(known)}"
            )
        params = {
            name: _check_cache_param(self.cache, name, kind, self.cache_params.get(name, default))
            for name, (kind, default) in known.items()
        }
        if self.cache == CACHE_MAG and params["mag_ratios"] is None and not params["calibrate"]:
            raise ValueError("cache 'mag' needs cache_params.mag_ratios (the checkpoint's) or calibrate=true")
        object.__setattr__(self, "cache_params", params)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SpeedProfile:
        """A profile from its JSON form (a route's render profile); ValueError says what is wrong."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"a speed profile must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_SPEED_PROFILE_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown speed profile fields: {', '.join(map(str, unknown))}; expected some of "
                f"{', '.join(_SPEED_PROFILE_FIELDS)}"
            )
        return cls(
            **{name: data[name] for name in _SPEED_PROFILE_FIELDS if name in data and data[name] is not None}
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, complete (every cache parameter with its value), which `from_dict` reads back."""
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in self.cache_params.items()}
        return {
            "attention_backend": self.attention_backend,
            "compile_blocks": self.compile_blocks,
            "cache": self.cache,
            "cache_params": params,
            "vae_tiling": self.vae_tiling,
            "tf32": self.tf32,
            "vae_decode_dtype": self.vae_decode_dtype,
            "cudnn_benchmark": self.cudnn_benchmark,
        }

    def replace(self, **changes: Any) -> SpeedProfile:
        if "cache" in changes and "cache_params" not in changes:
            changes["cache_params"] = {}
        return dataclasses.replace(self, **changes)


# --- Jobs -------------------------------------------------------------------------------------

# Storage keys are chosen by the backend (the rule of apps/storage): segments start with a letter or
# digit, so no `..`, no hidden files, no leading slash.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*(/[A-Za-z0-9][A-Za-z0-9._=-]*)*$")


# --- Scheduler overrides (a route's `scheduler`) ------------------------------------------------
# A route may replace its pipeline's scheduler (a step-distilled checkpoint ships its own schedule):
# {"class": one of SCHEDULER_CLASSES, "config": {...}}. The worker builds it with
# `<class>.from_config({**pipe.scheduler.config, **config})`; empty (`{}`) keeps the checkpoint's scheduler.
SCHEDULER_CLASSES: tuple[str, ...] = (
    "FlowMatchEulerDiscreteScheduler",
    "UniPCMultistepScheduler",
    "DPMSolverMultistepScheduler",
)
_SCHEDULER_CONFIG_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # no `_class_name`, `_diffusers_version`
_SCHEDULER_CONFIG_MAX_ITEMS = 64


def _is_json_value(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if depth >= 2:
        return False
    if isinstance(value, list):
        return len(value) <= 1024 and all(_is_json_value(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_value(v, depth + 1) for k, v in value.items())
    return False


def check_scheduler(data: Any) -> dict[str, Any]:
    """A route's scheduler override in its normal form (`{}`: none); ContractError says what is wrong."""
    _require(isinstance(data, Mapping), f"scheduler must be a mapping, got {type(data).__name__}")
    if not data:
        return {}
    unknown = sorted(set(data) - {"class", "config"})
    _require(not unknown, f"unknown scheduler fields: {', '.join(map(str, unknown))}")
    cls = data.get("class")
    _require(
        cls in SCHEDULER_CLASSES,
        f"scheduler.class must be one of {', '.join(SCHEDULER_CLASSES)}, got {cls!r}",
    )
    config = data.get("config", {})
    _require(isinstance(config, Mapping), "scheduler.config must be a mapping")
    _require(len(config) <= _SCHEDULER_CONFIG_MAX_ITEMS, "scheduler.config has too many entries")
    for key, value in config.items():
        _require(
            isinstance(key, str) and bool(_SCHEDULER_CONFIG_KEY.match(key)),
            f"scheduler.config key {key!r} must be a lower-case config name like shift or flow_shift",
        )
        _require(_is_json_value(value), f"scheduler.config.{key} must be a JSON value, got {value!r}")
    return {"class": cls, "config": dict(config)}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# What every kind of job does (GenerationJob, TrainingJob), each in its own order.


def _job_from_message(cls: Any, data: Any, what: str) -> Any:
    _check_version(data, what)
    try:
        return cls(**_known_fields(cls, data))
    except TypeError as exc:  # a missing required field
        raise ContractError(f"malformed {what} message: {exc}") from None


def _read_route(job: Any) -> None:
    """Turns the `route` of a job built from a message into a RouteSpec, in place."""
    if isinstance(job.route, dict):  # built from a message
        object.__setattr__(job, "route", RouteSpec.from_dict(job.route))
    _require(isinstance(job.route, RouteSpec), "route must be a RouteSpec")


def _require_identity(job: Any) -> None:
    _require(isinstance(job.job_id, str) and bool(job.job_id), "job_id must be a non-empty string")
    _require(_is_int(job.attempt) and job.attempt >= 1, "attempt must be an integer >= 1")


def _require_output_prefix(prefix: Any) -> None:
    _require(
        isinstance(prefix, str) and bool(KEY_PATTERN.match(prefix.rstrip("/"))),
        f"output_prefix is not a valid storage key prefix: {prefix!r}",
    )


def _require_seed(seed: Any) -> None:
    _require(_is_int(seed) and 0 <= seed <= MAX_SEED, f"seed must be an integer in 0..{MAX_SEED}")


@dataclass(frozen=True)
class RouteSpec:
    """The resolved model route a job runs on (a row of the backend's ModelRoute table).

    `checkpoint` is a folder relative to the worker's MODEL_ROOT (empty for tiny-wan, which is built
    from configs); `width`/`height`/`frames` are the route's native output, `fps` its frame rate.
    `speed_profile` is the JSON form of a `SpeedProfile` (empty: diffusers' defaults); the worker applies
    it to the route's pipeline and records what it applied in the job's timings (`speed_profile`).
    `scheduler` replaces the checkpoint's scheduler (`check_scheduler`; empty: the checkpoint's own),
    e.g. for a step-distilled checkpoint, which also says `steps` (few) and `guidance` 1.0 (no CFG).
    `lora_stacking` False: a user's Soul ID LoRA may not be stacked on this checkpoint (a distilled one
    that a LoRA trained on the base model would spoil); with `lora_support` it makes `takes_lora`.
    """

    name: str
    family: str
    checkpoint: str
    width: int
    height: int
    fps: int
    frames: int
    steps: int
    guidance: float
    image_conditioning: bool
    lora_support: bool
    # Added in version 1 (readers that predate it ignore it):
    speed_profile: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    lora_stacking: bool = True
    # Added without a version bump (an older worker ignores them and renders without the refine pass):
    refine_steps: int = 0
    refine_strength: float = 0.0

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and bool(self.name), "route.name must be a non-empty string")
        _require(
            self.family in FAMILIES,
            f"unknown pipeline family {self.family!r}; expected one of {sorted(FAMILIES)}",
        )
        _require(
            isinstance(self.checkpoint, str) and ".." not in self.checkpoint.split("/"),
            "route.checkpoint must be a folder under MODEL_ROOT",
        )
        for name in ("width", "height", "fps", "frames", "steps"):
            value = getattr(self, name)
            _require(_is_int(value) and value > 0, f"route.{name} must be a positive integer, got {value!r}")
        _require(_is_number(self.guidance) and self.guidance >= 0, "route.guidance must be a number >= 0")
        _require(isinstance(self.image_conditioning, bool), "route.image_conditioning must be a boolean")
        _require(isinstance(self.lora_support, bool), "route.lora_support must be a boolean")
        _require(isinstance(self.speed_profile, dict), "route.speed_profile must be a mapping")
        try:
            SpeedProfile.from_dict(self.speed_profile)
        except ValueError as exc:
            raise ContractError(f"route.speed_profile: {exc}") from None
        try:
            object.__setattr__(self, "scheduler", check_scheduler(self.scheduler))
        except ContractError as exc:
            raise ContractError(f"route.{exc}") from None
        _require(isinstance(self.lora_stacking, bool), "route.lora_stacking must be a boolean")
        try:
            _check_refine(self.refine_steps, self.refine_strength, self.family)
        except ContractError as exc:
            raise ContractError(f"route.{exc}") from None

    @property
    def takes_lora(self) -> bool:
        """Whether a user's Soul ID LoRA may run on this route."""
        return self.lora_support and self.lora_stacking

    @property
    def speedups(self) -> SpeedProfile:
        """The route's speed profile, read (its JSON form is checked when the route is built)."""
        return SpeedProfile.from_dict(self.speed_profile)

    @property
    def rules(self) -> FamilyRules:
        return FAMILIES[self.family]

    @classmethod
    def from_dict(cls, data: Any) -> RouteSpec:
        """A route from its message form (unknown fields ignored); ContractError says what is wrong."""
        _require(isinstance(data, dict), f"a route must be a mapping, got {type(data).__name__}")
        try:
            return cls(**_known_fields(cls, data))
        except TypeError as exc:  # a missing field
            raise ContractError(f"malformed route: {exc}") from None


# --- Quality tiers and render profiles -----------------------------------------------------------
# A route renders each quality tier (API.md QualityTier) with its own settings, a `RenderProfile`: DRAFT is
# the same model at a fraction of the cost (smaller, fewer steps), STANDARD its native quality, CINEMA
# spends more (more steps, no lossy step cache). The backend resolves the profile of a job's tier and sends
# the route rendered at it (`route_for_tier`); the worker runs `job.route` as it comes and records the
# settings it rendered with in the job's timings (`render`).
TIER_DRAFT = "DRAFT"
TIER_STANDARD = "STANDARD"
TIER_CINEMA = "CINEMA"
TIERS: tuple[str, ...] = (TIER_DRAFT, TIER_STANDARD, TIER_CINEMA)  # cheapest first
_RENDER_PROFILE_FIELDS = (
    "width",
    "height",
    "fps",
    "max_frames",
    "steps",
    "guidance",
    "scheduler",
    "speed_profile",
    "watermark",
    "refine_steps",
    "refine_strength",
)
# A visible mark burnt into the frames (GenerationJob.watermark): on by default for DRAFT only, the preview
# a user may share before paying for the final; a route's render profile may turn it on or off per tier.
WATERMARK_DEFAULT_TIERS: frozenset[str] = frozenset({TIER_DRAFT})
MAX_WATERMARK_CHARS = 40
MAX_REFINE_STEPS = 50


def _check_refine(steps: Any, strength: Any, family: str) -> None:
    """ContractError unless (`steps`, `strength`) is no refine pass (0, any) or one the family runs."""
    _require(
        _is_int(steps) and 0 <= steps <= MAX_REFINE_STEPS,
        f"refine_steps must be an integer from 0 to {MAX_REFINE_STEPS}, got {steps!r}",
    )
    if steps:
        _require(
            _is_number(strength) and 0 < strength < 1,
            f"refine_strength must be above 0 and below 1 (the share of the noise the refine pass "
            f"starts from), got {strength!r}",
        )
        _require(
            FAMILIES[family].refines,
            f"{family} has no refine pass (LTX refines in its two-stage flow when its folder holds "
            "latent_upsampler/): set refine_steps to 0",
        )


def latent_tokens(family: str, *, width: int, height: int, num_frames: int) -> int:
    """The transformer's tokens for one clip: (width / size multiple) x (height / size multiple) x
    latent frames (the size multiple is the VAE's spatial factor times the patch size)."""
    rules = FAMILIES[family]
    latent_frames = (num_frames - 1) // rules.frame_multiple + 1
    return (width // rules.size_multiple) * (height // rules.size_multiple) * latent_frames


@dataclass(frozen=True)
class RenderProfile:
    """How a route renders one tier: the size its jobs are made at (`width` x `height`, the landscape
    form; `output_size` turns it per aspect ratio), `fps`, the longest clip (`max_frames`, within what the
    model was trained on), denoising `steps` and `guidance`, a `scheduler` override (`check_scheduler`,
    e.g. `{"class": "UniPCMultistepScheduler", "config": {"flow_shift": 5.0}}`; empty: the route's), the
    speed-ups (`speed_profile`, a `SpeedProfile`'s JSON form; None: the route's), a refine pass
    (CINEMA's): `refine_steps` more steps with the same model at the same size over the first pass's
    latents, re-noised to `refine_strength` of the noise (a second low-noise pass, as img2img runs the
    tail of the schedule; 0: none), and whether its videos carry a visible mark (`watermark`; None: the
    tier's default, `watermark_for`)."""

    width: int
    height: int
    fps: int
    max_frames: int
    steps: int
    guidance: float
    scheduler: dict[str, Any] = field(default_factory=dict)
    speed_profile: dict[str, Any] | None = None
    watermark: bool | None = None
    refine_steps: int = 0
    refine_strength: float = 0.0

    def __post_init__(self) -> None:
        _require(
            self.watermark is None or isinstance(self.watermark, bool),
            "watermark must be true, false or null",
        )
        for name in ("width", "height", "fps", "max_frames", "steps"):
            value = getattr(self, name)
            _require(_is_int(value) and value > 0, f"{name} must be a positive integer, got {value!r}")
        _require(_is_number(self.guidance) and self.guidance >= 0, "guidance must be a number >= 0")
        object.__setattr__(self, "guidance", float(self.guidance))
        object.__setattr__(self, "scheduler", check_scheduler(self.scheduler))
        if self.speed_profile is not None:
            _require(isinstance(self.speed_profile, dict), "speed_profile must be a mapping or null")
            try:
                profile = SpeedProfile.from_dict(self.speed_profile)
            except ValueError as exc:
                raise ContractError(f"speed_profile: {exc}") from None
            object.__setattr__(self, "speed_profile", profile.to_dict())
        _require(
            _is_int(self.refine_steps) and 0 <= self.refine_steps <= MAX_REFINE_STEPS,
            f"refine_steps must be an integer from 0 to {MAX_REFINE_STEPS}, got {self.refine_steps!r}",
        )
        _require(_is_number(self.refine_strength), "refine_strength must be a number")
        object.__setattr__(self, "refine_strength", float(self.refine_strength))

    @property
    def all_steps(self) -> int:
        """The denoising steps of a job: the first pass's and the refine pass's."""
        return self.steps + self.refine_steps

    def check_for(self, family: str, *, native_width: int, native_height: int, native_frames: int) -> None:
        """ContractError unless the family can render this profile within its route's trained range:
        sizes on the family's multiple, at most MAX_AREA_FACTOR x the native area, and `max_frames` a
        frame count of the family, at most MAX_FRAME_FACTOR x the native frames."""
        rules = FAMILIES[family]
        _require(
            self.width % rules.size_multiple == 0 and self.height % rules.size_multiple == 0,
            f"width and height must be multiples of {rules.size_multiple} on {family}, "
            f"got {self.width}x{self.height}",
        )
        _require(
            self.width * self.height <= native_width * native_height * MAX_AREA_FACTOR,
            f"{self.width}x{self.height} is beyond the model's range ({native_width}x{native_height} native)",
        )
        _require(
            (self.max_frames - 1) % rules.frame_multiple == 0 and self.max_frames > rules.frame_multiple,
            f"max_frames must be {rules.frame_multiple}*k+1 on {family}, got {self.max_frames}",
        )
        _require(
            self.max_frames <= native_frames * MAX_FRAME_FACTOR,
            f"max_frames {self.max_frames} is beyond the model's range ({native_frames} frames native)",
        )
        _check_refine(self.refine_steps, self.refine_strength, family)

    def cost(self, family: str) -> int:
        """Steps x latent tokens of the longest clip at this size: what a tier costs, relatively."""
        return self.all_steps * latent_tokens(
            family, width=self.width, height=self.height, num_frames=self.max_frames
        )

    def clip_cost(self, family: str, *, num_frames: int) -> int:
        """Steps x latent tokens of a clip of `num_frames` at this profile's size: what the backend prices
        (apps/generations/pricing.py) and the ETA scales with."""
        return self.all_steps * latent_tokens(
            family, width=self.width, height=self.height, num_frames=num_frames
        )

    def unit_cost(self, family: str) -> int:
        """Steps x latent tokens per latent frame: comparable across tiers of equal clip lengths."""
        return self.all_steps * latent_tokens(family, width=self.width, height=self.height, num_frames=1)

    @classmethod
    def from_dict(cls, data: Any) -> RenderProfile:
        _require(isinstance(data, Mapping), f"a render profile must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_RENDER_PROFILE_FIELDS))
        _require(
            not unknown,
            f"unknown render profile fields: {', '.join(map(str, unknown))}; "
            f"expected some of {', '.join(_RENDER_PROFILE_FIELDS)}",
        )
        try:
            return cls(**dict(data))
        except TypeError as exc:  # a missing field
            raise ContractError(f"malformed render profile: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def watermark_for(self, tier: str) -> bool:
        """Whether this profile's videos carry the visible mark when it renders `tier`."""
        return self.watermark if self.watermark is not None else tier in WATERMARK_DEFAULT_TIERS


def route_for_tier(route: RouteSpec, profile: RenderProfile) -> RouteSpec:
    """The route as a job renders it at a tier: the profile's steps, guidance, fps and refine pass, its
    scheduler and speed profile where it names them. The native size and frames stay (they bound what
    jobs may ask)."""
    return dataclasses.replace(
        route,
        fps=profile.fps,
        steps=profile.steps,
        guidance=profile.guidance,
        refine_steps=profile.refine_steps,
        refine_strength=profile.refine_strength if profile.refine_steps else 0.0,
        scheduler=dict(profile.scheduler) if profile.scheduler else dict(route.scheduler),
        speed_profile=dict(profile.speed_profile)
        if profile.speed_profile is not None
        else dict(route.speed_profile),
    )


# --- Image moderation --------------------------------------------------------------------------
# The backend asks for image moderation in a job (`GenerationJob.moderation`, a `ModerationSpec`): the
# worker runs the image classifier in `model` (a transformers image-classification folder under its
# MODEL_ROOT) on the input photo before denoising and on `output_frames` frames of the output before
# upload. A category flags when its score is at or above its threshold (categories without a threshold
# never flag). A flagged input fails the job MODERATION (not retryable); a flagged output is still
# uploaded, for staff to review, and the completed event says so. Both events carry the verdicts in
# `JobEvent.moderation`: {"input": ModerationVerdict, "output": ModerationVerdict} (each when checked).
MAX_MODERATION_FRAMES = 16


@dataclass(frozen=True)
class ModerationSpec:
    model: str
    thresholds: dict[str, float]
    output_frames: int = 4

    def __post_init__(self) -> None:
        _require(
            isinstance(self.model, str) and bool(self.model) and ".." not in self.model.split("/"),
            "moderation.model must be a folder under MODEL_ROOT",
        )
        _require(
            isinstance(self.thresholds, Mapping)
            and all(isinstance(k, str) and _is_number(v) and v >= 0 for k, v in self.thresholds.items()),
            "moderation.thresholds must map category names to numbers >= 0",
        )
        object.__setattr__(self, "thresholds", {k: float(v) for k, v in self.thresholds.items()})
        _require(
            _is_int(self.output_frames) and 1 <= self.output_frames <= MAX_MODERATION_FRAMES,
            f"moderation.output_frames must be an integer in 1..{MAX_MODERATION_FRAMES}",
        )

    @classmethod
    def from_dict(cls, data: Any) -> ModerationSpec:
        _require(isinstance(data, Mapping), f"moderation must be a mapping, got {type(data).__name__}")
        try:
            return cls(**_known_fields(cls, dict(data)))
        except TypeError as exc:
            raise ContractError(f"malformed moderation: {exc}") from None


class ModerationVerdict(TypedDict):
    """What the classifier said about an image (the highest score over an output's frames)."""

    flagged: bool
    categories: list[str]  # the categories at or above their thresholds
    scores: dict[str, float]  # every category of the model, 0..1
    model: str


@dataclass(frozen=True)
class GenerationJob:
    """One generation attempt for a GPU worker. Built by the backend after planning and routing.

    `attempt` grows when the backend dispatches the generation again (a retry after a retryable
    failure, or the fallback route); `seed` is the attempt's seed (the worker picks a new one itself
    for its one quality-gate retry and reports the seed it used). `width`/`height` come from
    `output_size`, `num_frames` from `frames_for_duration` (both on the tier's render profile). Inputs and
    outputs are storage keys: the worker writes `<output_prefix>/video.mp4` and `<output_prefix>/poster.jpg`.

    `tier` (version 2) names the quality tier; `route` then comes rendered at it (`route_for_tier`: the
    tier's steps, guidance, fps, scheduler and speed-ups), so the worker runs `route` as it is. A finalized
    draft is a new job with the draft's seed and prompt at a higher tier on the same route.

    `sound_key` (added without a version bump: an old worker ignores it and delivers a silent video) is
    the trend's sound, an AAC M4A already normalized by the backend (apps/trends/sound.py): the worker
    muxes it into the MP4 as an AAC stereo track cut to the clip's length with a short fade-out, after
    the GPU is released, and its quality gate checks the track (gpu_worker/audio.py). None: silent.

    `watermark` (added the same way: an old worker delivers the video unmarked) is the text of a small
    visible mark burnt into the bottom-right corner of every frame before encoding (gpu_worker/watermark.py),
    when the tier's render profile asks for one (`RenderProfile.watermark_for`). None: no mark. The C2PA
    label (gpu_worker/content_credentials.py) is on every video either way.
    """

    job_id: str
    route: RouteSpec
    prompt: str
    negative_prompt: str
    seed: int
    aspect_ratio: str
    width: int
    height: int
    num_frames: int
    output_prefix: str
    attempt: int = 1
    image_key: str | None = None  # the selfie (first frame) for image-to-video; None for text-to-video
    lora_key: str | None = None  # a user's identity LoRA (safetensors, diffusers/peft keys)
    lora_scale: float = 1.0
    version: int = CONTRACT_VERSION
    sound_key: str | None = None  # the trend's sound (AAC M4A) to mux in; None: a silent video
    # Added in version 2: the quality tier `route` is rendered at (`route_for_tier`: the backend always
    # names one). None: the route's own settings, which is what every version-1 job means.
    tier: str | None = None
    watermark: str | None = None  # the text of a visible mark in a corner; None: none
    # Added without a version bump: image moderation asked by the backend (`ModerationSpec`; None: off).
    # A worker that predates it ignores it.
    moderation: ModerationSpec | None = None

    def __post_init__(self) -> None:
        _read_route(self)
        if self.moderation is not None and not isinstance(self.moderation, ModerationSpec):
            object.__setattr__(self, "moderation", ModerationSpec.from_dict(self.moderation))
        _require_identity(self)
        _require(self.version in SUPPORTED_VERSIONS, f"unsupported job version {self.version!r}")
        if self.version == 1:
            object.__setattr__(self, "tier", None)  # version 1 had no tier: the route's own settings
        _require(
            self.tier is None or self.tier in TIERS,
            f"tier must be one of {', '.join(TIERS)}, got {self.tier!r}",
        )
        _require(
            isinstance(self.prompt, str) and bool(self.prompt.strip()), "prompt must be a non-empty string"
        )
        _require(isinstance(self.negative_prompt, str), "negative_prompt must be a string")
        _require(
            len(self.prompt) <= MAX_PROMPT_CHARS and len(self.negative_prompt) <= MAX_PROMPT_CHARS,
            f"prompts are limited to {MAX_PROMPT_CHARS} characters",
        )
        _require_seed(self.seed)
        _require(self.aspect_ratio in ASPECT_RATIOS, f"unknown aspect ratio {self.aspect_ratio!r}")
        for name in ("width", "height", "num_frames"):
            value = getattr(self, name)
            _require(_is_int(value) and value > 0, f"{name} must be a positive integer, got {value!r}")
        _require_output_prefix(self.output_prefix)
        for name in ("image_key", "lora_key", "sound_key"):
            value = getattr(self, name)
            _require(
                value is None or (isinstance(value, str) and bool(KEY_PATTERN.match(value))),
                f"{name} must be None or a storage key, got {value!r}",
            )
        _require(_is_number(self.lora_scale) and 0 <= self.lora_scale <= 2, "lora_scale must be within 0..2")
        _require(
            self.watermark is None
            or (
                isinstance(self.watermark, str)
                and 0 < len(self.watermark.strip()) <= MAX_WATERMARK_CHARS
                and self.watermark.isprintable()
            ),
            f"watermark must be None or printable text of 1 to {MAX_WATERMARK_CHARS} characters",
        )

    @property
    def fps(self) -> int:
        return self.route.fps

    @property
    def duration_seconds(self) -> float:
        return self.num_frames / self.route.fps

    @property
    def video_key(self) -> str:
        return f"{self.output_prefix.rstrip('/')}/video.mp4"

    @property
    def poster_key(self) -> str:
        return f"{self.output_prefix.rstrip('/')}/poster.jpg"

    def to_message(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> GenerationJob:
        return _job_from_message(cls, data, "job")


def generation_message_fields(job: GenerationJob, *, lane: str, route_held: bool = False) -> dict[str, Any]:
    """The fields of the Dramatiq message that queues `job` on `lane`: `dramatiq.Message(**fields)`,
    then `broker.enqueue(message)` (after the database commit). With `route_held` (some worker
    advertises `route_held_key(job.route.name)`) the message goes to the lane's queue of its route."""
    if lane not in LANE_QUEUES:
        raise ContractError(f"unknown lane {lane!r}; expected one of {sorted(LANE_QUEUES)}")
    queue = route_queue(LANE_QUEUES[lane], job.route.name) if route_held else LANE_QUEUES[lane]
    return {
        "queue_name": queue,
        "actor_name": ACTOR_RUN_GENERATION,
        "args": (),
        "kwargs": {"job": job.to_message()},
        "options": {},
    }


# --- Events -----------------------------------------------------------------------------------

JOB_TYPE_GENERATION = "generation"
JOB_TYPE_TRAINING = "training"
JOB_TYPES: tuple[str, ...] = (JOB_TYPE_GENERATION, JOB_TYPE_TRAINING)
# The backend actor that receives the events of each job type: one for all (on QUEUE_JOB_EVENTS).
EVENT_ACTORS: dict[str, str] = {job_type: ACTOR_JOB_EVENT for job_type in JOB_TYPES}


class MediaOutput(TypedDict):
    """One output file of a completed job (API.md MediaFile, less the URL)."""

    key: str
    content_type: str
    bytes: int
    width: int
    height: int


class VideoOutput(MediaOutput):
    fps: int
    num_frames: int
    duration_seconds: float


@dataclass(frozen=True)
class JobEvent:
    """An event a GPU worker reports about one job.

    `kind` is one of `progress`, `stage`, `completed`, `failed`. Progress is best-effort; completed and
    failed are terminal and handled idempotently by the backend, which ignores a `sequence` it has seen.

    `sequence` grows within a run, and a later run of the same job (a Dramatiq retry or a redelivery
    after a worker died) starts above every number an earlier run used (a run numbers from the time it
    starts, in microseconds: store it in a 64-bit field), so "ignore a sequence at or below the last
    one seen" is always right. It is not the API's GenerationEvent.sequence, which the backend counts.

    `progress` is 0..1 across the whole job. A `completed` event's `outputs` are
    `{"video": VideoOutput, "poster": MediaOutput, "seed": int, "route": str, "has_sound": bool}` (the
    seed actually used; `has_sound`: the MP4 carries the job's sound); its `timings` are seconds:
    `load`, `denoise`, `decode`, `encode`, `mux` (with a sound), `quality`, `upload`, `total` and
    `seconds_per_step` (for ETAs per route: `denoise` over the route's steps), and, when the route has
    a speed profile, `speed_profile`: not seconds but what was applied (gpu_worker/speedups.py
    `apply_speedups`); and `render` (from version 2): what the job rendered with (`tier`, `width`,
    `height`, `num_frames`, `fps`, `steps`, `refine_steps`, `refine_strength`, `guidance`, `scheduler`,
    `latent_tokens` and `cost` = all steps x latent tokens). A job with a refine pass (the tier's
    `refine_steps`, gpu_worker/pipelines/refine.py) has its seconds in `denoise_refine` (part of
    `denoise`). An LTX job says which flow ran in `ltx_flow` ("one-stage" or "two-stage"), and a
    two-stage one the seconds of the parts of its `denoise`: `denoise_low_res`, `upsample` and
    `denoise_refine` (gpu_worker/pipelines/ltx.py). A
    `failed` event carries `reason_code` (one of REASON_CODES), `retryable` and a `message` safe to show.
    A non-terminal event with a `reason_code` announces a retry: QUALITY_FAILED (a new seed, same run;
    the event's `seed` is the new one) or a retryable code (the job runs again). A cancel is reported
    as `failed` with reason CANCELED.

    `job_type` says which job the event is about: JOB_TYPE_GENERATION (job_id: the generation) or
    JOB_TYPE_TRAINING (job_id: the character; see `TrainingJob` for its stages and outputs). Progress
    events of a training also carry `step` (steps done), `total_steps` and `eta_seconds` (the time left
    to the end of the job, from the steps so far); they stay 0 / None where they do not apply.
    """

    job_id: str
    sequence: int
    kind: str
    stage: str | None = None
    progress: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)  # seconds, and `speed_profile` (see above)
    reason_code: str | None = None
    retryable: bool = False
    message: str = ""
    attempt: int = 1
    emitted_at: float = 0.0  # the worker's time.time() when it sent the event (latency measurement)
    version: int = CONTRACT_VERSION
    # Added in version 1 (readers that predate them ignore them):
    job_type: str = JOB_TYPE_GENERATION  # or JOB_TYPE_TRAINING
    step: int = 0
    total_steps: int = 0
    eta_seconds: float | None = None
    # Added without a version bump: the image moderation verdicts of a generation (see ModerationSpec);
    # empty when none was asked. Readers that predate it ignore it.
    moderation: dict[str, Any] = field(default_factory=dict)
    # Added without a version bump (readers that predate it ignore it): the seed a QUALITY_FAILED retry
    # renders with, on the event that announces it, so the backend shows it while the retry runs.
    seed: int | None = None

    KINDS = ("progress", "stage", "completed", "failed")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ContractError(f"unknown event kind {self.kind!r}; expected one of {self.KINDS}")
        if not 0.0 <= self.progress <= 1.0:
            raise ContractError(f"progress must be within 0..1, got {self.progress}")
        if self.stage is not None and self.stage not in ALL_STAGES:
            raise ContractError(f"unknown stage {self.stage!r}; expected one of {ALL_STAGES}")
        if self.reason_code is not None and self.reason_code not in REASON_CODES:
            raise ContractError(f"unknown reason code {self.reason_code!r}")
        if self.kind == "failed" and self.reason_code is None:
            raise ContractError("a failed event needs a reason_code")
        if self.job_type not in JOB_TYPES:
            raise ContractError(f"unknown job type {self.job_type!r}; expected one of {JOB_TYPES}")
        if not (
            _is_int(self.step) and _is_int(self.total_steps) and self.step >= 0 and self.total_steps >= 0
        ):
            raise ContractError("step and total_steps must be integers >= 0")
        if self.eta_seconds is not None and not (_is_number(self.eta_seconds) and self.eta_seconds >= 0):
            raise ContractError("eta_seconds must be None or a number >= 0")
        if not isinstance(self.moderation, dict) or not all(
            key in ("input", "output") and isinstance(value, dict) for key, value in self.moderation.items()
        ):
            raise ContractError('moderation must be a mapping of "input" and "output" verdicts')
        if self.seed is not None and not (_is_int(self.seed) and 0 <= self.seed < 2**63):
            raise ContractError("seed must be None or an integer from 0 to 2**63 - 1")

    @property
    def is_terminal(self) -> bool:
        return self.kind in ("completed", "failed")

    def to_message(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> JobEvent:
        _check_version(data, "event")
        return cls(**_known_fields(cls, data))


# --- Identity training (Soul ID) --------------------------------------------------------------
# Families a LoRA can be trained for (Wan transformers: LoRA on attn1/attn2 to_q, to_k, to_v, to_out.0).
TRAINABLE_FAMILIES: tuple[str, ...] = (FAMILY_TINY_WAN, FAMILY_WAN22)
TRAINING_MIN_PHOTOS = 10  # fewer readable photos: the worker fails the job BAD_INPUT
TRAINING_MAX_PHOTOS = 20  # more photo keys: the message breaks the contract
MAX_TRAINING_STEPS = 20_000
MAX_TRAINING_RANK = 256
MAX_TRAINING_RESOLUTION = 1536
MAX_TRAINING_BATCH = 16
MAX_TRIGGER_CHARS = 64
LORA_FILE_NAME = "pytorch_lora_weights.safetensors"  # diffusers' name (WanPipeline.save_lora_weights)
LORA_CONTENT_TYPE = "application/octet-stream"
DEFAULT_TRIGGER = "sks person"

# Suggested settings per family (the backend may override any of them in the job).
# tiny-wan trains in well under a second on a CPU (tests, the embedded mode); wan22 is the recipe of
# reference/gpu.md §4 for 10-20 selfies as one-frame videos (rank 32 = alpha, AdamW, 512 px) with the same
# 1,000 samples seen as 1,000 steps at batch 1, in 250 steps at batch 4: on an H200 a step costs 0.55 s at
# batch 4 and 0.59 s at batch 1 (bench/gpu_real.py), so training takes about 2.5 min instead of 10. The
# learning rate follows the square root of the batch. To be checked on real selfies and weights.
TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    FAMILY_TINY_WAN: {"steps": 30, "rank": 4, "learning_rate": 5e-3, "resolution": 32, "batch_size": 2},
    FAMILY_WAN22: {"steps": 250, "rank": 32, "learning_rate": 2e-4, "resolution": 512, "batch_size": 4},
}


def training_defaults(family: str) -> dict[str, Any]:
    """The suggested `steps`, `rank`, `learning_rate`, `resolution` and `batch_size` for a family."""
    if family not in TRAINING_DEFAULTS:
        raise ContractError(f"no LoRA training for family {family!r}; trainable: {TRAINABLE_FAMILIES}")
    return dict(TRAINING_DEFAULTS[family])


def lora_fits_route(route: RouteSpec, *, family: str, base_checkpoint: str) -> bool:
    """Whether a LoRA trained for (family, base_checkpoint) may be used on `route`: the same family and
    the same checkpoint folder (the folder names the model and its version), on a route that takes LoRAs
    (`takes_lora`: it supports them and lets them stack)."""
    return route.takes_lora and route.family == family and route.checkpoint == base_checkpoint


@dataclass(frozen=True)
class TrainingJob:
    """One identity-LoRA training attempt for a GPU worker (the backend's `trainCharacter`).

    `job_id` is the character id; `attempt` grows with each dispatch of the same training (a retry) and
    with each new training of the character. `route` is the generation route the LoRA is made for: its
    `family` and `checkpoint` are the base model (the completed event repeats them; `lora_fits_route`
    tells which routes may use the LoRA). `photo_keys` are the face crops the backend prepared (any
    size, RGB; the worker centre-crops them square and resizes them to `resolution`). Each photo is one
    sample, captioned `caption` (default: "a photo of <trigger>"); generations then say the trigger in
    their prompt. `rank` is also the LoRA alpha. The worker writes `lora_key`
    (`<output_prefix>/pytorch_lora_weights.safetensors`): give each training its own prefix (e.g.
    `characters/<id>/lora/<attempt>`), since generation workers cache LoRA weights by key.

    The worker reports, besides the generation events: stages PREPARING, LOADING_MODEL, TRAINING,
    SAVING, UPLOADING; progress events of stage TRAINING with `step`, `total_steps`, `eta_seconds`; a
    `completed` event whose `outputs` is a `TrainingOutputs` and whose `timings` (seconds) are
    `prepare`, `load`, `encode`, `train`, `save`, `upload`, `total` and `seconds_per_step`; or `failed`
    with BAD_INPUT (too few photos, a photo missing or unreadable: `outputs["bad_photo_keys"]` lists
    them), MODEL_UNAVAILABLE, OUT_OF_MEMORY, TIMED_OUT, INTERNAL or CANCELED.
    """

    job_id: str
    route: RouteSpec
    photo_keys: tuple[str, ...]
    output_prefix: str
    seed: int
    steps: int
    rank: int
    learning_rate: float
    resolution: int
    trigger: str = DEFAULT_TRIGGER
    caption: str = ""
    batch_size: int = 1
    attempt: int = 1
    version: int = CONTRACT_VERSION

    def __post_init__(self) -> None:
        _read_route(self)
        _require(
            self.route.family in TRAINABLE_FAMILIES,
            f"no LoRA training for family {self.route.family!r}; trainable: {TRAINABLE_FAMILIES}",
        )
        _require(self.route.lora_support, f"route {self.route.name} takes no LoRA")
        _require_identity(self)
        _require(isinstance(self.photo_keys, list | tuple), "photo_keys must be a list of storage keys")
        keys = tuple(self.photo_keys)
        for key in keys:
            _require(
                isinstance(key, str) and len(key) <= 512 and bool(KEY_PATTERN.match(key)),
                f"photo_keys must be storage keys, got {key!r}",
            )
        _require(len(set(keys)) == len(keys), "photo_keys must not repeat a key")
        _require(len(keys) <= TRAINING_MAX_PHOTOS, f"at most {TRAINING_MAX_PHOTOS} photos, got {len(keys)}")
        object.__setattr__(self, "photo_keys", keys)
        _require_output_prefix(self.output_prefix)
        _require_seed(self.seed)
        _require(
            _is_int(self.steps) and 1 <= self.steps <= MAX_TRAINING_STEPS,
            f"steps must be an integer in 1..{MAX_TRAINING_STEPS}",
        )
        _require(
            _is_int(self.rank) and 1 <= self.rank <= MAX_TRAINING_RANK,
            f"rank must be an integer in 1..{MAX_TRAINING_RANK}",
        )
        _require(
            _is_number(self.learning_rate) and 0 < self.learning_rate <= 1,
            "learning_rate must be a number in (0, 1]",
        )
        multiple = self.route.rules.size_multiple
        _require(
            _is_int(self.resolution)
            and 0 < self.resolution <= MAX_TRAINING_RESOLUTION
            and self.resolution % multiple == 0,
            f"resolution must be a multiple of {multiple} up to {MAX_TRAINING_RESOLUTION} "
            f"on {self.route.family}, got {self.resolution!r}",
        )
        _require(
            _is_int(self.batch_size) and 1 <= self.batch_size <= MAX_TRAINING_BATCH,
            f"batch_size must be an integer in 1..{MAX_TRAINING_BATCH}",
        )
        _require(
            isinstance(self.trigger, str)
            and bool(self.trigger.strip())
            and len(self.trigger) <= MAX_TRIGGER_CHARS
            and self.trigger.isprintable(),
            f"trigger must be a printable string of 1..{MAX_TRIGGER_CHARS} characters",
        )
        _require(
            isinstance(self.caption, str) and len(self.caption) <= MAX_PROMPT_CHARS,
            f"caption must be a string of at most {MAX_PROMPT_CHARS} characters",
        )

    @property
    def family(self) -> str:
        return self.route.family

    @property
    def base_checkpoint(self) -> str:
        return self.route.checkpoint

    @property
    def prompt(self) -> str:
        """The caption of every photo: `caption`, else "a photo of <trigger>"."""
        return self.caption.strip() or f"a photo of {self.trigger}"

    @property
    def lora_key(self) -> str:
        return f"{self.output_prefix.rstrip('/')}/{LORA_FILE_NAME}"

    def to_message(self) -> dict[str, Any]:
        message = dataclasses.asdict(self)
        message["photo_keys"] = list(self.photo_keys)
        return message

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> TrainingJob:
        return _job_from_message(cls, data, "training job")


def training_message_fields(job: TrainingJob) -> dict[str, Any]:
    """The fields of the Dramatiq message that queues `job` on QUEUE_GPU_TRAINING:
    `dramatiq.Message(**fields)`, then `broker.enqueue(message)` (after the database commit)."""
    return {
        "queue_name": QUEUE_GPU_TRAINING,
        "actor_name": ACTOR_TRAIN_CHARACTER,
        "args": (),
        "kwargs": {"job": job.to_message()},
        "options": {},
    }


class LoraOutput(TypedDict):
    """The trained LoRA file: diffusers/peft keys (`transformer.blocks.N.attn1.to_q.lora_A.weight`), what
    `GenerationJob.lora_key` takes."""

    key: str
    content_type: str
    bytes: int
    sha256: str  # hex digest of the file


class TrainingOutputs(TypedDict):
    """`outputs` of a training job's `completed` event."""

    lora: LoraOutput
    route: str  # the route name of the job
    family: str  # the base model the LoRA was trained for: use it only where
    base_checkpoint: str  # lora_fits_route(route, family=..., base_checkpoint=...) holds
    trigger: str
    prompt: str  # the caption the photos were trained with
    rank: int
    resolution: int
    photos: int
    steps: int  # the steps run
    seed: int
    first_loss: float
    final_loss: float  # the mean loss of the last steps (up to 10)


# --- Log context (one generation followed end to end) -----------------------------------------
# Every log record, on the server, the backend workers and the GPU workers, carries the same context
# keys, so a search for one request id or job id finds the whole story across processes. The context
# lives in a contextvar; a Dramatiq message carries it in its options under LOG_CONTEXT_OPTION (an
# optional field: a message without it is read as before, and a reader that predates it ignores it).
# Both sides bind it around each message with one small Dramatiq middleware (gpu_worker/log_context.py)
# built on `log_context_to_options` / `log_context_bind_options`.

LOG_CONTEXT_OPTION = "log_context"
LOG_CONTEXT_FIELDS: tuple[str, ...] = ("request_id", "user_id", "organization_id", "operation", "job_id")
_LOG_CONTEXT_MAX_CHARS = 128
_log_context: ContextVar[Mapping[str, str]] = ContextVar("log_context", default={})  # noqa: B039


def log_context() -> dict[str, str]:
    """The fields bound in the current context (request, message or job)."""
    return dict(_log_context.get())


def log_context_bind(**fields: Any) -> Token:
    """Adds `fields` (known names; None or empty skipped) to the current context; `log_context_reset`
    with the returned token restores what was there."""
    merged = dict(_log_context.get())
    for name, value in fields.items():
        if name in LOG_CONTEXT_FIELDS and value not in (None, ""):
            merged[name] = str(value)[:_LOG_CONTEXT_MAX_CHARS]
    return _log_context.set(merged)


def log_context_reset(token: Token) -> None:
    _log_context.reset(token)


def log_context_to_options(options: dict[str, Any]) -> None:
    """Writes the current context into a message's options (before it is enqueued), unless the message
    already carries one (a retry keeps the context of its first send)."""
    current = _log_context.get()
    if current and LOG_CONTEXT_OPTION not in options:
        options[LOG_CONTEXT_OPTION] = dict(current)


def log_context_bind_options(options: Mapping[str, Any]) -> Token:
    """Binds the context a message carries (anything malformed is ignored) on top of a clean one."""
    carried = options.get(LOG_CONTEXT_OPTION)
    fields = (
        {k: v for k, v in carried.items() if isinstance(v, str | int)} if isinstance(carried, dict) else {}
    )
    token = _log_context.set({})
    log_context_bind(**fields)
    return token


class LogContextFilter(logging.Filter):
    """Puts the bound context on every record (as attributes `request_id`, `job_id`, ...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _log_context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the log context, and the exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in LOG_CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)

    converter = time.gmtime
