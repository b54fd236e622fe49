"""GraphQL types of generations (API.md): Generation, GenerationEvent, MediaFile, Failure, ShotPlan.

Resolvers that cannot touch the database are `async def` (no thread hop); the ones that may are plain
functions, which strawberry-django runs in a worker thread. Every query path loads a generation with its
trend (and the trend's category) and its route, so listing them costs a constant number of queries.
"""

from __future__ import annotations

import enum
from datetime import datetime

import strawberry
import strawberry_django
from asgiref.sync import sync_to_async
from strawberry import Info, relay
from strawberry.relay.types import GlobalIDValueError

from apps.generations import models
from apps.generations.planner import ShotPlan as ShotPlanData
from apps.generations.selectors import QueueEstimate, generation_estimate
from apps.storage.backends import get_storage

from ..storage.types import absolute_url
from ..trends.types import AspectRatio, CameraMovement, QualityTier, TrendType


@strawberry.enum(description="Where a generation is.")
class GenerationStatus(enum.Enum):
    QUEUED = models.GenerationStatus.QUEUED.value
    RUNNING = models.GenerationStatus.RUNNING.value
    SUCCEEDED = models.GenerationStatus.SUCCEEDED.value
    FAILED = models.GenerationStatus.FAILED.value
    CANCELED = models.GenerationStatus.CANCELED.value


@strawberry.enum(description="What a running generation is doing.")
class GenerationStage(enum.Enum):
    PLANNING = models.GenerationStage.PLANNING.value
    LOADING_MODEL = models.GenerationStage.LOADING_MODEL.value
    DENOISING = models.GenerationStage.DENOISING.value
    DECODING = models.GenerationStage.DECODING.value
    ENCODING = models.GenerationStage.ENCODING.value
    UPLOADING = models.GenerationStage.UPLOADING.value
    QUALITY_CHECK = models.GenerationStage.QUALITY_CHECK.value


@strawberry.enum(description="How soon a video is made: INSTANT, or ECONOMY (cheaper, waits for free GPUs).")
class SpeedLane(enum.Enum):
    INSTANT = models.Lane.INSTANT.value
    ECONOMY = models.Lane.ECONOMY.value


FailureCode = strawberry.enum(
    enum.Enum("GenerationFailureCode", {code: code for code in models.FAILURE_CODES}),
    name="GenerationFailureCode",
    description="Why a generation did not succeed.",
)


@strawberry.type(description="A file to download: an expiring URL and what it holds.")
class MediaFile:
    url: str = strawberry.field(description="Works for a few minutes; query again for a fresh one.")
    width: int
    height: int
    duration_seconds: float | None = strawberry.field(description="Videos only.")
    fps: int | None = strawberry.field(description="Videos only.")
    bytes: int
    content_type: str


@strawberry.type(description="Why a generation failed or was canceled. Credits are never charged for it.")
class Failure:
    code: FailureCode  # type: ignore[valid-type]
    message: str = strawberry.field(description="Safe to show to the user.")
    retryable: bool = strawberry.field(description="Trying again later may work.")


@strawberry.type(description="How the shot is filmed: camera, lens, movement, light, and the final prompt.")
class ShotPlan:
    camera_body: str
    lens: str
    focal_length_mm: int
    aperture: float = strawberry.field(description="The f-number, like 1.8.")
    movement: CameraMovement
    movement_strength: float = strawberry.field(description="0 (subtle) to 1 (strong).")
    lighting: str
    color_mood: str
    pacing: str = strawberry.field(description="slow, medium or fast.")
    prompt: str = strawberry.field(description="The prompt written for the model.")
    negative_prompt: str
    style_keywords: list[str]


def _estimate_sync(root: models.Generation) -> QueueEstimate:
    cached = getattr(root, "_queue_estimate", None)
    if cached is None:
        cached = generation_estimate(root)
        root._queue_estimate = cached
    return cached


async def _estimate(root: models.Generation) -> QueueEstimate:
    if root.is_terminal:
        return QueueEstimate(position=None, eta_seconds=None)
    cached = getattr(root, "_queue_estimate", None)
    if cached is not None:
        return cached
    if root.status == models.GenerationStatus.RUNNING and (
        root.route_id is None or "route" in root._state.fields_cache
    ):
        return _estimate_sync(root)  # no query: the run time left on the loaded route
    return await sync_to_async(_estimate_sync)(root)


async def _related(root: models.Generation, name: str):
    field = root._meta.get_field(name)
    if getattr(root, field.attname) is None:
        return None
    if field.is_cached(root):
        return getattr(root, name)
    return await sync_to_async(getattr)(root, name)


def _absolute(info: Info, url: str) -> str:
    """An absolute URL, over HTTP (the request) and over a websocket (its Host header) alike."""
    url = absolute_url(info, url)
    if "://" in url:
        return url
    scope = getattr(info.context.ws, "scope", None) or {}
    headers = dict(scope.get("headers") or ())
    host = headers.get(b"host", b"").decode("latin-1")
    if not host:
        return url
    secure = scope.get("scheme") in ("wss", "https")
    return f"{'https' if secure else 'http'}://{host}{url}"


def _media(info: Info, *, key: str, content_type: str, **facts) -> MediaFile | None:
    if not key:
        return None
    url = _absolute(info, get_storage().download_url(key))
    return MediaFile(url=url, content_type=content_type, **facts)


@strawberry_django.type(
    models.Generation,
    name="Generation",
    description="A video being made from a trend or a prompt, and the result.",
    disable_optimization=True,  # every query path loads it with its trend and route (get_queryset)
)
class GenerationType(relay.Node):
    progress: float = strawberry_django.field(description="0 to 1 across the whole job.")
    credits_charged: int = strawberry_django.field(description="Charged only when the video is ready.")
    created_at: datetime
    finished_at: datetime | None
    prompt: str = strawberry_django.field(description="What the user typed, if anything.")
    duration_seconds: int

    @strawberry_django.field
    async def status(self, root: strawberry.Parent[models.Generation]) -> GenerationStatus:
        return GenerationStatus(root.status)

    @strawberry_django.field
    async def stage(self, root: strawberry.Parent[models.Generation]) -> GenerationStage | None:
        return GenerationStage(root.stage) if root.stage and not root.is_terminal else None

    @strawberry_django.field(description="1 when it starts next; null unless queued.")
    async def queue_position(self, root: strawberry.Parent[models.Generation]) -> int | None:
        return (await _estimate(root)).position

    @strawberry_django.field(description="Seconds until the video is ready: queue wait plus run time.")
    async def eta_seconds(self, root: strawberry.Parent[models.Generation]) -> int | None:
        return (await _estimate(root)).eta_seconds

    @strawberry_django.field
    async def failure(self, root: strawberry.Parent[models.Generation]) -> Failure | None:
        if not root.failure_code:
            return None
        return Failure(
            code=FailureCode[root.failure_code],
            message=root.failure_message,
            retryable=root.failure_retryable,
        )

    @strawberry_django.field(description="Credits held for it when it was created.")
    async def price(self, root: strawberry.Parent[models.Generation]) -> int:
        return root.quoted_credits

    @strawberry_django.field
    async def aspect_ratio(self, root: strawberry.Parent[models.Generation]) -> AspectRatio:
        return AspectRatio(root.aspect_ratio)

    @strawberry_django.field
    async def quality(self, root: strawberry.Parent[models.Generation]) -> QualityTier:
        return QualityTier(root.quality)

    @strawberry_django.field
    async def speed(self, root: strawberry.Parent[models.Generation]) -> SpeedLane:
        return SpeedLane(root.lane)

    @strawberry_django.field(description="The trend it was made from; null for a free prompt.")
    async def trend(self, root: strawberry.Parent[models.Generation]) -> TrendType | None:
        return await _related(root, "trend")

    @strawberry_django.field(description="How the shot is filmed.")
    async def plan(self, root: strawberry.Parent[models.Generation]) -> ShotPlan | None:
        if not root.plan:
            return None
        try:
            data = ShotPlanData.from_dict(root.plan)
        except ValueError:
            return None
        return ShotPlan(
            camera_body=data.camera_body,
            lens=data.lens,
            focal_length_mm=data.focal_length_mm,
            aperture=data.aperture,
            movement=CameraMovement(data.movement),
            movement_strength=data.movement_strength,
            lighting=data.lighting,
            color_mood=data.color_mood,
            pacing=data.pacing,
            prompt=data.prompt,
            negative_prompt=data.negative_prompt,
            style_keywords=list(data.style_keywords),
        )

    @strawberry_django.field(description="The MP4 (H.264), once succeeded.")
    async def video(self, root: strawberry.Parent[models.Generation], info: Info) -> MediaFile | None:
        if root.status != models.GenerationStatus.SUCCEEDED:
            return None
        return _media(
            info,
            key=root.video_key,
            content_type="video/mp4",
            width=root.video_width or 0,
            height=root.video_height or 0,
            duration_seconds=root.video_duration_seconds,
            fps=root.video_fps,
            bytes=root.video_bytes or 0,
        )

    @strawberry_django.field(description="A JPEG still of the video, once succeeded.")
    async def poster(self, root: strawberry.Parent[models.Generation], info: Info) -> MediaFile | None:
        if root.status != models.GenerationStatus.SUCCEEDED:
            return None
        return _media(
            info,
            key=root.poster_key,
            content_type="image/jpeg",
            width=root.poster_width or 0,
            height=root.poster_height or 0,
            duration_seconds=None,
            fps=None,
            bytes=root.poster_bytes or 0,
        )

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        # Global IDs (`node`) never reveal another user's generation, nor a deleted one.
        user = info.context.user
        if user is None:
            return queryset.none()
        return queryset.filter(owner=user, deleted_at__isnull=True).select_related("trend__category", "route")


GenerationConnection = relay.ListConnection[GenerationType]


@strawberry.type(description="One change of a generation; `sequence` grows by one per change.")
class GenerationEvent:
    sequence: int
    generation: GenerationType


@strawberry.type
class GenerationPayload:
    generation: GenerationType


@strawberry.type(description="What a generation would cost and when it would be ready.")
class QuotePayload:
    credits: int
    eta_seconds: int
    balance: int = strawberry.field(description="The caller's spendable credits now.")
    aspect_ratio: AspectRatio
    duration_seconds: int
    quality: QualityTier
    speed: SpeedLane


@strawberry.type
class SharePayload:
    generation: GenerationType


def node_pk(value: str, type_name: str) -> str:
    """The primary key in a global ID of `type_name` (a raw UUID is accepted too); anything else is
    returned as given, for the service to answer NotFound."""
    try:
        global_id = relay.GlobalID.from_id(value)
    except (GlobalIDValueError, ValueError):
        return value
    return global_id.node_id if global_id.type_name == type_name else value
