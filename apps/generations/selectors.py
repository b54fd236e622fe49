"""Reads of generations, with the access check (another user's generation is NotFound, like a missing
one), and the queue position and ETA of a generation or of a new one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, FloatField, Q, QuerySet, Sum, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, TruncDate

from apps.core.errors import NotFound

from .models import Generation, GenerationStatus, Lane, ModelRoute
from .routing import routes_by_id, run_seconds

NOT_FOUND_MESSAGE = "This generation does not exist."


def parse_generation_id(generation_id) -> uuid.UUID:
    try:
        return uuid.UUID(str(generation_id))
    except ValueError:
        raise NotFound(NOT_FOUND_MESSAGE, field="id") from None


def generations_visible_to(*, user) -> QuerySet[Generation]:
    """A user's generations that were not deleted, newest first; none when signed out."""
    if user is None:
        return Generation.objects.none()
    return Generation.objects.filter(owner=user, deleted_at__isnull=True).order_by("-created_at", "-id")


def generation_get_for_user(*, user, generation_id, for_update: bool = False) -> Generation:
    pk = parse_generation_id(generation_id)
    queryset = generations_visible_to(user=user).filter(pk=pk)
    if for_update:
        queryset = queryset.select_for_update(of=("self",))
    generation = queryset.select_related("trend__category", "route").first()
    if generation is None:
        raise NotFound(NOT_FOUND_MESSAGE, field="id")
    return generation


def generation_visible_or_none(*, user, generation_id) -> Generation | None:
    """The generation if the user may see it (a final's draft the user deleted reads as none)."""
    return (
        generations_visible_to(user=user)
        .filter(pk=generation_id)
        .select_related("trend__category", "route")
        .first()
    )


def generation_finals(*, user, draft: Generation) -> list[Generation]:
    """The finals the user may see that were rendered from `draft`, newest first."""
    return list(
        generations_visible_to(user=user)
        .filter(draft=draft)
        .select_related("trend__category", "route")
        .order_by("-created_at")
    )


def generations_to_continue_exist(*, user) -> bool:
    """Whether the user has a video in progress or ready to watch (the home screen's continue section)."""
    return (
        generations_visible_to(user=user)
        .filter(status__in=[GenerationStatus.QUEUED, GenerationStatus.RUNNING, GenerationStatus.SUCCEEDED])
        .exists()
    )


def generation_sound_in_use(key: str) -> bool:
    """Whether a video being made (queued or running) reads this stored sound (apps.trends asks before
    it deletes a trend's replaced sound)."""
    return Generation.objects.filter(
        sound_key=key, status__in=[GenerationStatus.QUEUED, GenerationStatus.RUNNING]
    ).exists()


# --- Queue position and ETA -------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueEstimate:
    position: int | None  # 1: next to start; None when not queued
    eta_seconds: int | None  # queue wait + run time; None when finished


def _lanes_at_or_above(lane: str) -> list[str]:
    # A GPU worker takes INSTANT first, ECONOMY only when INSTANT is empty.
    return [Lane.INSTANT] if lane == Lane.INSTANT else [Lane.INSTANT, Lane.ECONOMY]


def _work_seconds(rows, routes: dict) -> float:
    total = 0.0
    for row in rows:
        route = routes.get(row["route_id"])
        if route is None:
            continue
        seconds = run_seconds(
            route,
            width=row["width"],
            height=row["height"],
            num_frames=row["num_frames"],
            quality=row["quality"],
        )
        total += seconds * row.get("n", 1) * (1.0 - row.get("progress", 0.0))
    return total


def _queue_wait_seconds(ahead: QuerySet[Generation], routes: dict) -> tuple[int, float]:
    """(jobs ahead, seconds until a GPU is free for the next one) - two queries."""
    grouped = list(
        ahead.values("route_id", "width", "height", "num_frames", "quality").annotate(n=Count("id"))
    )
    running = list(
        Generation.objects.filter(status=GenerationStatus.RUNNING).values(
            "route_id", "width", "height", "num_frames", "quality", "progress"
        )
    )
    seconds = _work_seconds(grouped, routes) + _work_seconds(running, routes)
    return sum(row["n"] for row in grouped), seconds / max(settings.GENERATIONS_GPU_CAPACITY, 1)


def _routes() -> dict:
    return routes_by_id()  # this process's copy of the routes (read only here)


def generation_estimate(generation: Generation, *, routes: dict | None = None) -> QueueEstimate:
    """Queue position and ETA: none for a finished generation; run time left for a running one
    (no query); for a queued one, the work ahead of it in its lane and the lanes above it."""
    if generation.is_terminal:
        return QueueEstimate(position=None, eta_seconds=None)
    route = generation.route
    own = (
        run_seconds(
            route,
            width=generation.width,
            height=generation.height,
            num_frames=generation.num_frames,
            quality=generation.quality,
        )
        if route is not None
        else 0.0
    )
    if generation.status == GenerationStatus.RUNNING:
        return QueueEstimate(position=None, eta_seconds=round(own * (1.0 - generation.progress)))
    routes = routes if routes is not None else _routes()
    same_lane_before = Q(lane=generation.lane) & (
        Q(queued_at__lt=generation.queued_at) | Q(queued_at=generation.queued_at, id__lt=generation.id)
    )
    ahead = Generation.objects.filter(status=GenerationStatus.QUEUED, share_held=False).filter(
        same_lane_before
        | Q(lane__in=[lane for lane in _lanes_at_or_above(generation.lane) if lane != generation.lane])
    )
    count, wait = _queue_wait_seconds(ahead, routes)
    return QueueEstimate(position=count + 1, eta_seconds=round(wait + own))


def new_job_eta_seconds(
    *, route: ModelRoute, lane: str, width: int, height: int, num_frames: int, quality: str | None = None
) -> int:
    """The ETA of a generation submitted now: everything queued in its lane and above, then itself (at
    its tier's steps)."""
    ahead = Generation.objects.filter(
        status=GenerationStatus.QUEUED, share_held=False, lane__in=_lanes_at_or_above(lane)
    )
    _, wait = _queue_wait_seconds(ahead, _routes())
    own = run_seconds(route, width=width, height=height, num_frames=num_frames, quality=quality)
    return round(wait + own)


# --- Cost per output minute (the admin report, apps/generations/admin.py) -----------------------------

# The stages of a job that hold the GPU (gpu_worker/contract.py JobEvent timings): the CPU tail (encode,
# quality check, upload) runs after the GPU is handed to the next job, so it is not GPU time.
GPU_TIMINGS = ("load", "denoise", "decode")


@dataclass(frozen=True)
class RouteCostRow:
    """One route, tier and day of succeeded generations."""

    day: date
    route: str
    tier: str
    jobs: int
    gpu_seconds: float
    output_minutes: float
    cost_usd: Decimal  # GPU seconds x the route's cost per GPU-hour (its rate now)
    credits_earned: int

    @property
    def cost_per_output_minute(self) -> Decimal | None:
        if self.output_minutes <= 0:
            return None
        return (self.cost_usd / Decimal(str(self.output_minutes))).quantize(Decimal("0.0001"))

    @property
    def credits_per_output_minute(self) -> float | None:
        return self.credits_earned / self.output_minutes if self.output_minutes > 0 else None


def route_costs_by_day(*, since: datetime, until: datetime) -> list[RouteCostRow]:
    """Succeeded generations finished in [since, until), by day (UTC), route and tier: jobs, GPU seconds,
    output minutes, their GPU cost at each route's cost per GPU-hour, and the credits charged for them.
    Staff only (the admin page); one aggregate query plus one for the routes' rates."""

    def timing(key: str):
        return Coalesce(Cast(KT(f"timings__{key}"), FloatField()), Value(0.0))

    gpu_seconds = sum((timing(key) for key in GPU_TIMINGS[1:]), timing(GPU_TIMINGS[0]))
    rows = (
        Generation.objects.filter(
            status=GenerationStatus.SUCCEEDED, finished_at__gte=since, finished_at__lt=until
        )
        .annotate(day=TruncDate("finished_at"))
        .values("day", "route_name", "quality")
        .annotate(
            jobs=Count("id"),
            gpu_seconds=Sum(gpu_seconds),
            output_seconds=Sum(Coalesce("video_duration_seconds", Value(0.0))),
            credits=Sum("credits_charged"),
        )
        .order_by("day", "route_name", "quality")
    )
    rates = dict(ModelRoute.objects.values_list("name", "cost_per_gpu_hour"))
    return [
        RouteCostRow(
            day=row["day"],
            route=row["route_name"],
            tier=row["quality"],
            jobs=row["jobs"],
            gpu_seconds=row["gpu_seconds"] or 0.0,
            output_minutes=(row["output_seconds"] or 0.0) / 60,
            cost_usd=(
                Decimal(str(row["gpu_seconds"] or 0.0)) * rates.get(row["route_name"], Decimal(0)) / 3600
            ).quantize(Decimal("0.0001")),
            credits_earned=row["credits"] or 0,
        )
        for row in rows
    ]
