"""Choosing a model route, sizing the job for it, and learning how long it takes.

Routing: `GENERATIONS_ROUTE_OVERRIDE` wins when set (the embedded mode sends everything to tiny-wan).
Otherwise the candidates are the trend's preferred route (or `GENERATIONS_DEFAULT_ROUTE` for a free
prompt) followed by its fallback chain, and the first enabled one that serves the quality tier, the lane
and the inputs (a selfie needs image conditioning, a Soul ID needs LoRA support) is chosen. Routes
outside that chain are never chosen, so a trend made for one model never silently lands on another.

The routes come from each process's copy of the table (`routes_by_id`, apps/core/table_cache.py): every
write of a route, the timings below included, bumps its version, so the next read sees it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

from django.conf import settings
from django.db.models import F

import gpu_worker.contract as contract
from apps.core.errors import UnsupportedOption
from apps.core.table_cache import TableCache
from apps.trends.models import QualityTier, Trend

from .models import CONTRACT_ASPECT_RATIOS, Lane, ModelRoute

# How much of a completed job's timing the route's averages take (exponential moving average).
TIMING_WEIGHT = 0.2

SOUL_ID_ROUTE_MESSAGE = "This Soul ID cannot be used with this preset: it was made for another video model."

_routes = TableCache(ModelRoute, lambda: {route.pk: route for route in ModelRoute.objects.all()})


def routes_by_id() -> dict:
    """Every model route by primary key, from this process's copy while the table's version holds.
    Shared by the process's requests: read them, copy one before changing it."""
    return _routes.get()


def lora_fits(route: ModelRoute, lora: tuple[str, str] | None) -> bool:
    """Whether a Soul ID's LoRA, given as (family, base checkpoint), may run on `route` (None: no LoRA)."""
    if lora is None:
        return True
    family, base_checkpoint = lora
    return contract.lora_fits_route(route.spec(), family=family, base_checkpoint=base_checkpoint)


def _chain(start: ModelRoute | None, routes_by_id: dict) -> Iterator[ModelRoute]:
    seen = set()
    route = start
    while route is not None and route.pk not in seen:
        seen.add(route.pk)
        yield route
        route = routes_by_id.get(route.fallback_id)


def route_choose(
    *,
    trend: Trend | None,
    quality: str,
    lane: str,
    needs_image: bool,
    needs_lora: bool,
    lora: tuple[str, str] | None = None,
) -> ModelRoute:
    """The route a new generation runs on, or UnsupportedOption saying which choice to change.

    `lora` is the (family, base checkpoint) a Soul ID's LoRA was trained for: only a route it fits
    (gpu_worker.contract.lora_fits_route) is chosen, the first one in the chain."""
    routes = routes_by_id()
    by_name = {route.name: route for route in routes.values()}
    wanted = dict(quality=quality, lane=lane, needs_image=needs_image, needs_lora=needs_lora)

    override = settings.GENERATIONS_ROUTE_OVERRIDE
    if override:
        route = by_name.get(override)
        if route is None or not route.enabled:
            raise UnsupportedOption("No video model is available right now. Try again later.")
        if needs_image and not route.image_conditioning:
            raise UnsupportedOption("This model cannot use your photo or Soul ID.", field="photoUploadId")
        if needs_lora and not route.takes_lora:
            raise UnsupportedOption("This model cannot use your photo or Soul ID.", field="characterId")
        if not lora_fits(route, lora):
            raise UnsupportedOption(SOUL_ID_ROUTE_MESSAGE, field="characterId")
        return copy.copy(route)  # the generation's own, not the process's shared row

    preferred = by_name.get(trend.preferred_model_route if trend else settings.GENERATIONS_DEFAULT_ROUTE)
    chain = [route for route in _chain(preferred, routes) if route.enabled]
    for route in chain:
        if route.serves(**wanted) and lora_fits(route, lora):
            return copy.copy(route)
    if not chain:
        raise UnsupportedOption("This video model is not available right now. Try again later.")
    if lora is not None:
        chain = [route for route in chain if lora_fits(route, lora)]
        if not chain:
            raise UnsupportedOption(SOUL_ID_ROUTE_MESSAGE, field="characterId")

    # Say what to change: the tier, the lane, or the inputs.
    usable = [
        route
        for route in chain
        if (route.image_conditioning or not needs_image) and (route.takes_lora or not needs_lora)
    ]
    if not usable:
        field = "characterId" if needs_lora else "photoUploadId"
        raise UnsupportedOption("This trend cannot use your photo or Soul ID right now.", field=field)
    tiers = [
        tier
        for tier in QualityTier.values
        if any(tier in r.quality_tiers and lane in r.lanes for r in usable)
    ]
    if tiers and quality not in tiers:
        raise UnsupportedOption(
            f"{QualityTier(quality).label} quality is not offered here. Choose {' or '.join(tiers)}.",
            field="quality",
        )
    lanes = [
        value for value in Lane.values if any(value in r.lanes and quality in r.quality_tiers for r in usable)
    ]
    raise UnsupportedOption(
        f"The {Lane(lane).name} speed is not offered for this quality."
        + (f" Choose {' or '.join(lanes)}." if lanes else ""),
        field="speed",
    )


def route_fallback(
    route: ModelRoute | None, *, needs_image: bool, needs_lora: bool, lora: tuple[str, str] | None = None
) -> ModelRoute | None:
    """The next enabled route in `route`'s fallback chain that can take the inputs (and that the Soul
    ID's LoRA, `lora`, fits), or None."""
    if route is None:
        return None
    candidate = route.fallback
    seen = {route.pk}
    while candidate is not None and candidate.pk not in seen:
        seen.add(candidate.pk)
        if (
            candidate.enabled
            and (candidate.image_conditioning or not needs_image)
            and (candidate.takes_lora or not needs_lora)
            and lora_fits(candidate, lora)
        ):
            return candidate
        candidate = candidate.fallback
    return None


def job_size(
    route: ModelRoute, *, aspect_ratio: str, duration_seconds: int, quality: str = QualityTier.STANDARD
) -> tuple[int, int, int]:
    """(width, height, num_frames) of a job on `route` at `quality`: the tier's render profile's size
    and fps, by gpu_worker.contract's rules."""
    rules = route.rules
    profile = route.profile(quality)
    width, height = contract.output_size(
        CONTRACT_ASPECT_RATIOS[aspect_ratio],
        native_width=profile.width,
        native_height=profile.height,
        size_multiple=rules.size_multiple,
    )
    frames = contract.frames_for_duration(
        duration_seconds, fps=profile.fps, frame_multiple=rules.frame_multiple
    )
    return width, height, frames


def job_fits(
    route: ModelRoute, *, width: int, height: int, num_frames: int, quality: str = QualityTier.STANDARD
) -> bool:
    """Whether the model of `route` handles a clip of that size: within the worker's limits and no longer
    than the tier's `max_frames` (what the model was trained on)."""
    return (
        width * height <= route.width * route.height * contract.MAX_AREA_FACTOR
        and num_frames <= route.frames * contract.MAX_FRAME_FACTOR
        and num_frames <= route.profile(quality).max_frames
    )


def route_longest_seconds(route: ModelRoute) -> float:
    """The longest clip, in seconds, `route` renders at every tier it offers (its render profiles'
    `max_frames`, within what the model was trained on, at the tier's fps)."""
    limit = route.frames * contract.MAX_FRAME_FACTOR
    return min(
        (min(route.profile(tier).max_frames, limit) - 1) / route.profile(tier).fps
        for tier in route.quality_tiers or QualityTier.values
    )


def route_durations_beyond(name: str, durations) -> tuple[list[int], float]:
    """Of `durations` (seconds), those the route named `name` cannot render at some tier it offers, and
    the longest clip it renders; ([], 0) for an unknown route (which is a problem of its own).
    apps.trends asks it before a trend offering those lengths on that route goes live."""
    route = ModelRoute.objects.filter(name=name).first()
    if route is None:
        return [], 0.0
    beyond = [
        seconds
        for seconds in durations
        if any(
            contract.frames_for_duration(
                seconds, fps=route.profile(tier).fps, frame_multiple=route.rules.frame_multiple
            )
            > min(route.profile(tier).max_frames, route.frames * contract.MAX_FRAME_FACTOR)
            for tier in route.quality_tiers
        )
    ]
    return beyond, route_longest_seconds(route)


def size_factor(route: ModelRoute, *, width: int, height: int, num_frames: int) -> float:
    """How much more work a job is than the route's native clip (pixels x frames)."""
    native = route.width * route.height * route.frames
    return max((width * height * num_frames) / native, 0.01) if native else 1.0


def run_seconds(
    route: ModelRoute, *, width: int, height: int, num_frames: int, quality: str | None = None
) -> float:
    """Expected seconds from the start of a job to its completion on `route`, with the steps of the
    tier's render profile, its refine pass's included (the route's own steps without a tier)."""
    factor = size_factor(route, width=width, height=height, num_frames=num_frames)
    steps = route.profile(quality).all_steps if quality else route.steps
    return steps * route.seconds_per_step * factor + route.overhead_seconds


def route_record_timings(
    *, route_id, timings: dict, width: int, height: int, num_frames: int, route: ModelRoute
) -> None:
    """Folds a completed job's timings into its route's averages (one UPDATE, no lock: a sample lost
    to a concurrent update does not matter for an average). The UPDATE bumps the routes' version
    (VersionedQuerySet), so quotes and ETAs in every process use the new averages."""
    per_step = timings.get("seconds_per_step")
    total = timings.get("total")
    denoise = timings.get("denoise")
    if not all(
        isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in (per_step, total, denoise)
    ):
        return
    factor = size_factor(route, width=width, height=height, num_frames=num_frames)
    native_per_step = per_step / factor
    overhead = max(total - denoise, 0.0)
    w = TIMING_WEIGHT
    ModelRoute.objects.filter(pk=route_id, timing_samples=0).update(
        seconds_per_step=native_per_step, overhead_seconds=overhead, timing_samples=1
    ) or ModelRoute.objects.filter(pk=route_id).update(
        seconds_per_step=F("seconds_per_step") * (1 - w) + native_per_step * w,
        overhead_seconds=F("overhead_seconds") * (1 - w) + overhead * w,
        timing_samples=F("timing_samples") + 1,
    )


def route_spec_enabled(name: str) -> contract.RouteSpec | None:
    """The enabled route of that name as the GPU contract describes it (Soul ID training asks for it)."""
    route = ModelRoute.objects.filter(name=name, enabled=True).first()
    return route.spec() if route is not None else None
