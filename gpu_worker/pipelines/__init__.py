"""Model families: one module per family, each with the same small surface (diffusers style, no base class).

A family module provides:

- `check_inputs(job)`: raises a concise `ValueError` when the job cannot run on its route (the
  runner reports BAD_INPUT, not retryable). The shared rules are in `check_route_inputs` below.
- `load(route, *, model_root, device) -> model`: builds or loads the pipelines; `ModelUnavailable`
  when this worker cannot (no checkpoint folder, no CUDA).
- the model: `pipeline_for(job)` (text-to-video or image-to-video); `denoise(pipe, job, image=...,
  generator=..., callback=..., timings=...)`, the job's latents from one or more calls of that pipeline
  (each with `output_type="latent"`, so the runner times the denoising and the decoding apart; the
  arguments of one call come from `call_kwargs`), with `callback` as every call's `callback_on_step_end`
  and anything worth recording about the passes written into the job's `timings`; `denoise_steps(job)`,
  how many times `callback` is called in all (the runner's progress runs over them); and
  `decode(pipe, latents, generator, size=None)` returning frames (F, H, W, 3) at `size` (width,
  height; the latents' own size when None): float in [0, 1], or uint8 (the Wan families convert on the
  GPU). One call at the job's size is the rule; LTX's two-stage flow is the exception (ltx.py).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from gpu_worker.contract import (
    FAMILY_LTX,
    FAMILY_TINY_WAN,
    FAMILY_WAN22,
    MAX_AREA_FACTOR,
    MAX_FRAME_FACTOR,
    GenerationJob,
    RouteSpec,
)

FAMILY_MODULES = {
    FAMILY_TINY_WAN: "gpu_worker.pipelines.tiny_wan",
    FAMILY_WAN22: "gpu_worker.pipelines.wan22",
    FAMILY_LTX: "gpu_worker.pipelines.ltx",
}


class ModelUnavailable(RuntimeError):
    """This worker cannot run the route: its checkpoint folder or the device it needs is missing."""


class VideoModel(Protocol):
    route: RouteSpec

    def pipeline_for(self, job: GenerationJob) -> Any: ...

    def denoise_steps(self, job: GenerationJob) -> int: ...

    def denoise(
        self, pipe: Any, job: GenerationJob, *, image: Any, generator: Any, callback: Any, timings: dict
    ) -> Any: ...

    def decode(
        self, pipe: Any, latents: Any, generator: Any, *, size: tuple[int, int] | None = None
    ) -> Any: ...


def family_module(family: str) -> ModuleType:
    if family not in FAMILY_MODULES:
        raise ValueError(f"unknown pipeline family {family!r}")
    return importlib.import_module(FAMILY_MODULES[family])


def check_inputs(job: GenerationJob) -> None:
    family_module(job.route.family).check_inputs(job)


def load_model(route: RouteSpec, *, model_root: Path, device: str) -> VideoModel:
    return family_module(route.family).load(route, model_root=model_root, device=device)


def check_route_inputs(job: GenerationJob) -> None:
    """The rules every family shares: sizes, frame counts and what the route accepts."""
    route, rules = job.route, job.route.rules
    m, fm = rules.size_multiple, rules.frame_multiple
    if job.width % m or job.height % m:
        raise ValueError(
            f"width and height must be multiples of {m} on {route.name}, got {job.width}x{job.height}"
        )
    if job.width * job.height > route.width * route.height * MAX_AREA_FACTOR:
        raise ValueError(
            f"{job.width}x{job.height} is larger than {route.name} renders "
            f"({route.width}x{route.height} native)"
        )
    if job.num_frames < fm + 1 or (job.num_frames - 1) % fm:
        raise ValueError(
            f"num_frames must be {fm}*k+1 and at least {fm + 1} on {route.name}, got {job.num_frames}"
        )
    if job.num_frames > route.frames * MAX_FRAME_FACTOR:
        raise ValueError(f"{job.num_frames} frames is more than {route.name} renders ({route.frames} native)")
    if job.image_key is not None and not route.image_conditioning:
        raise ValueError(f"{route.name} takes no input image")
    if job.lora_key is not None and not route.lora_support:
        raise ValueError(f"{route.name} takes no LoRA")
    if job.lora_key is not None and not route.lora_stacking:
        raise ValueError(f"{route.name} does not stack a LoRA on its checkpoint")


def scheduler_for(route: RouteSpec, checkpoint_scheduler: Any) -> Any:
    """The scheduler a job on `route` runs with: the route's override (`route.scheduler`), built from the
    checkpoint's scheduler config with the override's entries on top, or `checkpoint_scheduler` itself."""
    if not route.scheduler:
        return checkpoint_scheduler
    import diffusers

    scheduler_class = getattr(diffusers, route.scheduler["class"])
    return scheduler_class.from_config({**checkpoint_scheduler.config, **route.scheduler["config"]})


def checkpoint_folder(route: RouteSpec, model_root: Path) -> Path:
    """The route's diffusers folder under MODEL_ROOT; ModelUnavailable when it is not there."""
    if not route.checkpoint:
        raise ModelUnavailable(f"route {route.name} names no checkpoint folder")
    folder = Path(model_root) / route.checkpoint
    if not (folder / "model_index.json").is_file():
        raise ModelUnavailable(
            f"route {route.name}: no diffusers checkpoint at {folder} (no model_index.json there); "
            "download it into MODEL_ROOT first"
        )
    return folder


def require_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailable(f"device {device!r} requested but CUDA is not available on this worker")
