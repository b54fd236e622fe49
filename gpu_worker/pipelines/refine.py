"""The refine pass of a render profile (CINEMA's) for the Wan families: a second, low-noise pass of the
same model at the same size over the first pass's latents, with the same prompt, guidance and callback.

It runs as diffusers' image-to-image pipelines run their `strength` (`get_timesteps`): of the schedule the
pipeline's scheduler makes for `steps / strength` steps, only the last `steps` run, from the first pass's
latents re-noised to where that tail begins (flow matching: x = (1 - sigma) * x0 + sigma * noise, the
noise from the job's generator, so the same job gives the same frames). The first pass fixes the shot;
the refine pass re-draws its detail at low noise. The job's timings get `denoise_refine`, its seconds
(part of `denoise`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor


def refine_schedule_steps(steps: int, strength: float) -> int:
    """The length of the schedule whose last `steps` the refine pass runs (at least one step more)."""
    return max(steps + 1, round(steps / strength))


@contextlib.contextmanager
def _schedule_tail(scheduler: Any, steps: int) -> Iterator[None]:
    """While open, the scheduler keeps only the last `steps` timesteps of any schedule it is asked for
    (its sigmas with the terminal one): the pipeline's loop then runs the tail alone."""
    set_full = scheduler.set_timesteps

    def set_tail(*args: Any, **kwargs: Any) -> None:
        set_full(*args, **kwargs)
        scheduler.timesteps = scheduler.timesteps[-steps:]
        scheduler.sigmas = scheduler.sigmas[-(steps + 1) :]
        scheduler.num_inference_steps = steps

    scheduler.set_timesteps = set_tail
    try:
        yield
    finally:
        del scheduler.set_timesteps  # the class's method again


@torch.no_grad()
def refine(
    pipe: Any,
    call_kwargs: dict[str, Any],
    latents: torch.Tensor,
    *,
    steps: int,
    strength: float,
    generator: torch.Generator,
    timings: dict,
) -> torch.Tensor:
    """The first pass's `latents` (the pipeline's `output_type="latent"` output) refined by `steps` more
    steps of `pipe`, called with `call_kwargs` (the first pass's arguments) otherwise unchanged."""
    started = time.perf_counter()
    try:
        # 1. Where the tail of the schedule begins
        full = refine_schedule_steps(steps, strength)
        scheduler = pipe.scheduler
        scheduler.set_timesteps(full, device=latents.device)
        sigma = float(scheduler.sigmas[full - steps])

        # 2. The first pass's latents, re-noised to that level
        noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        noised = (1.0 - sigma) * latents + sigma * noise

        # 3. The tail, denoised
        with _schedule_tail(scheduler, steps):
            return pipe(**{**call_kwargs, "latents": noised, "num_inference_steps": full}).frames
    finally:
        timings["denoise_refine"] = timings.get("denoise_refine", 0.0) + time.perf_counter() - started


def denoise_and_refine(
    pipe: Any, call_kwargs: dict[str, Any], route: Any, *, generator: torch.Generator, timings: dict
) -> torch.Tensor:
    """The Wan families' denoising: the first pass, then the tier's refine pass (CINEMA's) at the same
    size when `route` (the job's RouteSpec) asks for one."""
    latents = pipe(**call_kwargs).frames
    if route.refine_steps:
        latents = refine(
            pipe,
            call_kwargs,
            latents,
            steps=route.refine_steps,
            strength=route.refine_strength,
            generator=generator,
            timings=timings,
        )
    return latents
