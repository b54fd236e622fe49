"""A GPU worker's settings, from the environment (names shared with backend/settings.py where they overlap).

REDIS_URL          the broker (and the cancel flags); required by `python -m gpu_worker`
MODEL_ROOT         folder of diffusers checkpoints (else VAR_DIR/models, else ./var/models)
STORAGE_BACKEND, MEDIA_ROOT, S3_BUCKET, S3_ENDPOINT_URL, S3_REGION   see gpu_worker/storage.py
GPU_DEVICE         torch device of the real routes (cuda); tiny-wan always runs on the CPU
GPU_WORKER_THREADS jobs at once on the GPU in this process (1: one process per GPU)
GPU_TAIL_THREADS   jobs whose CPU tail (encode, quality gate, upload) may run beside the GPU's job (1;
                   0: the next job waits for the tail)
GPU_JOB_TIME_LIMIT_S  Dramatiq time limit of one generation (1800)
GPU_TRAINING_TIME_LIMIT_S  Dramatiq time limit of one Soul ID training (7200)
GPU_TRAINING_MAX_WAIT_S  how long a training waits behind ECONOMY before it goes ahead of it (600)
GPU_PROGRESS_INTERVAL_S  minimum seconds between two progress events of a job (0.25)
GPU_STOP_TIMEOUT_S  how long SIGTERM waits for the running job before the process exits (600)
GPU_CPU_OFFLOAD    1: model CPU offload for GPUs with less memory than the route needs
GPU_REDIS_TIMEOUT_S  how long one Redis call of a running job (an event, a cancel-flag read) may take (2)
GPU_MAX_LOADED_MODELS  models kept loaded at once (default: 2 on a GPU with 80 GB or more, else 1;
                   runner.default_max_loaded_models)
GPU_PRELOAD_ROUTES routes to load at start, before the first job: a JSON list of route objects (the
                   `route` of a job message), or the path of a file holding one. The worker also serves
                   their route queues first and advertises them while loaded (gpu_worker/routes_held.py).
                   A preloaded route whose speed profile has compile_blocks is warmed up (one denoising
                   step per shape, latents only) so its blocks compile before the first job
GPU_WARMUP_SHAPES  the shapes of that warm-up, "WxHxF" comma-separated (e.g. "704x1280x121,1280x704x121");
                   empty: each route's native size in both orientations at its native frame count
GPU_LORA_HOTSWAP_RANK  the rank users' LoRAs are padded to on a route with compiled blocks, where they are
                   hot-swapped into one adapter slot without recompiling (64; a LoRA of a higher rank
                   does not fit)
C2PA_SIGN_CERT     the AI label's signer (gpu_worker/content_credentials.py): a PEM file of its certificate
                   chain, end-entity first, then the intermediates
C2PA_SIGN_KEY      a PEM file of the end-entity certificate's private key
C2PA_SIGN_ALG      the key's signing algorithm (es256; es384, es512, ps256, ps384, ps512, ed25519)
C2PA_TSA_URL       an RFC 3161 timestamp authority for the signatures (none by default)
C2PA_PRODUCER      the service named as the labels' producer (claim generator) ("Diffuse")
C2PA_DISABLED      1: deliver videos without a C2PA label. Without it and without C2PA_SIGN_CERT/KEY a
                   worker in development signs with a chain it makes at start-up (trusted by no one), and
                   one with APP_ENV=production refuses to start
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gpu_worker.contract import ContractError, RouteSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
# Above the longest legitimate job (Wan 2.2 TI2V-5B, 50 steps at 720p: about 9 min on an RTX 4090).
DEFAULT_TIME_LIMIT_S = 30 * 60
# Above the longest legitimate training (Wan 2.2 TI2V-5B, about 1,000 steps at 512 px; to be measured).
DEFAULT_TRAINING_TIME_LIMIT_S = 2 * 60 * 60
DEFAULT_TRAINING_MAX_WAIT_S = 10 * 60
DEFAULT_REDIS_TIMEOUT_S = 2.0
DEFAULT_LORA_HOTSWAP_RANK = 64  # as gpu_worker/runner.py's (this module does not import torch)
DEFAULT_C2PA_PRODUCER = "Diffuse"


@dataclass(frozen=True)
class LabelSettings:
    """How delivered videos are labelled as AI-made (C2PA_*, above)."""

    cert_chain_path: Path | None = None
    private_key_path: Path | None = None
    alg: str = "es256"
    tsa_url: str | None = None
    producer: str = DEFAULT_C2PA_PRODUCER
    disabled: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LabelSettings:
        cert, key = environ.get("C2PA_SIGN_CERT", "").strip(), environ.get("C2PA_SIGN_KEY", "").strip()
        disabled = environ.get("C2PA_DISABLED", "").strip().lower() in ("1", "true", "yes", "on")
        if bool(cert) != bool(key):
            raise ValueError("C2PA_SIGN_CERT and C2PA_SIGN_KEY go together: set both or neither")
        if not cert and not disabled and environ.get("APP_ENV") == "production":
            raise ValueError(
                "C2PA_SIGN_CERT and C2PA_SIGN_KEY are required in production: every delivered video carries "
                "a signed AI label (set C2PA_DISABLED=1 to deliver unlabelled videos)"
            )
        return cls(
            cert_chain_path=Path(cert) if cert else None,
            private_key_path=Path(key) if key else None,
            alg=environ.get("C2PA_SIGN_ALG", "").strip().lower() or "es256",
            tsa_url=environ.get("C2PA_TSA_URL", "").strip() or None,
            producer=environ.get("C2PA_PRODUCER", "").strip() or DEFAULT_C2PA_PRODUCER,
            disabled=disabled,
        )


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class WorkerSettings:
    redis_url: str
    model_root: Path
    device: str
    threads: int
    time_limit_s: int
    progress_interval_s: float
    stop_timeout_s: int
    training_time_limit_s: int = DEFAULT_TRAINING_TIME_LIMIT_S
    training_max_wait_s: float = DEFAULT_TRAINING_MAX_WAIT_S
    redis_timeout_s: float = DEFAULT_REDIS_TIMEOUT_S
    max_loaded_models: int | None = None  # None: by the GPU's memory
    preload_routes: tuple[RouteSpec, ...] = ()
    tail_threads: int = 1
    warmup_shapes: tuple[tuple[int, int, int], ...] = ()
    lora_hotswap_rank: int = DEFAULT_LORA_HOTSWAP_RANK
    label: LabelSettings = LabelSettings()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        environ = os.environ if environ is None else environ
        var_dir = Path(environ.get("VAR_DIR") or REPO_ROOT / "var")
        return cls(
            redis_url=environ.get("REDIS_URL", ""),
            model_root=Path(environ.get("MODEL_ROOT") or var_dir / "models"),
            device=environ.get("GPU_DEVICE") or "cuda",
            threads=_int(environ, "GPU_WORKER_THREADS", 1),
            time_limit_s=_int(environ, "GPU_JOB_TIME_LIMIT_S", DEFAULT_TIME_LIMIT_S),
            progress_interval_s=float(environ.get("GPU_PROGRESS_INTERVAL_S") or 0.25),
            stop_timeout_s=_int(environ, "GPU_STOP_TIMEOUT_S", 600),
            training_time_limit_s=_int(environ, "GPU_TRAINING_TIME_LIMIT_S", DEFAULT_TRAINING_TIME_LIMIT_S),
            training_max_wait_s=float(environ.get("GPU_TRAINING_MAX_WAIT_S") or DEFAULT_TRAINING_MAX_WAIT_S),
            redis_timeout_s=float(environ.get("GPU_REDIS_TIMEOUT_S") or DEFAULT_REDIS_TIMEOUT_S),
            max_loaded_models=_positive_int_or_none(environ, "GPU_MAX_LOADED_MODELS"),
            preload_routes=preload_routes(environ.get("GPU_PRELOAD_ROUTES", "")),
            tail_threads=_int(environ, "GPU_TAIL_THREADS", 1),
            warmup_shapes=warmup_shapes(environ.get("GPU_WARMUP_SHAPES", "")),
            lora_hotswap_rank=_positive_int_or_none(environ, "GPU_LORA_HOTSWAP_RANK")
            or DEFAULT_LORA_HOTSWAP_RANK,
            label=LabelSettings.from_env(environ),
        )


def _positive_int_or_none(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def preload_routes(value: str) -> tuple[RouteSpec, ...]:
    """GPU_PRELOAD_ROUTES: a JSON list of routes, or the path of a JSON file holding one ("": none)."""
    value = value.strip()
    if not value:
        return ()
    try:
        data = json.loads(value if value[0] in "[{" else Path(value).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"GPU_PRELOAD_ROUTES is not JSON or the path of a readable JSON file: {exc}"
        ) from None
    if not isinstance(data, list):
        raise ValueError("GPU_PRELOAD_ROUTES must be a JSON list of routes")
    try:
        return tuple(RouteSpec.from_dict(route) for route in data)
    except ContractError as exc:
        raise ValueError(f"GPU_PRELOAD_ROUTES: {exc}") from None


def warmup_shapes(value: str) -> tuple[tuple[int, int, int], ...]:
    """GPU_WARMUP_SHAPES: "WxHxF" items, comma-separated ("": none given)."""
    shapes = []
    for item in value.split(","):
        item = item.strip().lower()
        if not item:
            continue
        parts = item.split("x")
        if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
            raise ValueError(f"GPU_WARMUP_SHAPES: {item!r} is not WIDTHxHEIGHTxFRAMES")
        width, height, frames = (int(part) for part in parts)
        shapes.append((width, height, frames))
    return tuple(shapes)
