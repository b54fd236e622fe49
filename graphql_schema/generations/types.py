"""GraphQL types of generations (API.md): Generation, GenerationEvent, Failure, ShotPlan; written in the
toolkit's style (graphql_schema/toolkit.py). Every query path loads a generation with its trend (and the
trend's category) and its route, so listing them costs a constant number of queries.
"""

from __future__ import annotations

from datetime import datetime

import strawberry
import strawberry_django
from asgiref.sync import sync_to_async
from strawberry import Info, relay

from apps.generations import models, selectors
from apps.generations.planner import ShotPlan as ShotPlanData
from apps.generations.selectors import QueueEstimate, generation_estimate

from ..enums import (
    AspectRatio,
    CameraMovement,
    GenerationFailureCode,
    GenerationStage,
    GenerationStatus,
    QualityTier,
    SpeedLane,
)
from ..toolkit import MediaFile, ModelNode, media_file
from ..trends.types import TrendType


@strawberry.type(description="Why a generation failed or was canceled. Credits are never charged for it.")
class Failure:
    code: GenerationFailureCode  # type: ignore[valid-type]
    message: str = strawberry.field(description="Safe to show to the user.")
    retryable: bool = strawberry.field(description="Trying again later may work.")


@strawberry.type(description="How the shot is filmed: camera, lens, movement, light, and the final prompt.")
class ShotPlan:
    camera_body: str
    lens: str
    focal_length_mm: int
    aperture: float = strawberry.field(description="The f-number, like 1.8.")
    movement: CameraMovement  # type: ignore[valid-type]
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


@strawberry_django.type(
    models.Generation,
    name="Generation",
    description="A video being made from a trend or a prompt, and the result.",
    disable_optimization=True,  # every query path loads it with its trend and route (get_queryset)
)
class GenerationType(ModelNode):
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
            code=GenerationFailureCode(root.failure_code),
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

    @strawberry_django.field(
        description="Whether the video carries the trend's sound: asked for (withSound), and the trend "
        "has one."
    )
    async def has_sound(self, root: strawberry.Parent[models.Generation]) -> bool:
        return root.has_sound

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

    @strawberry_django.field(
        description="The seed of the video: the one the GPU used once it ran (a quality-gate retry picks a "
        "new one), else the one it will start from."
    )
    async def seed(self, root: strawberry.Parent[models.Generation]) -> int:
        used = root.seed_used
        return used if used is not None and 0 <= used < 2**31 else root.seed  # older workers: 56-bit seeds

    @strawberry_django.field(description="The quality tier it is rendered at (the same as `quality`).")
    async def tier(self, root: strawberry.Parent[models.Generation]) -> QualityTier:
        return QualityTier(root.quality)

    @strawberry_django.field(description="Width in pixels: the video's once made, else the planned one.")
    async def width(self, root: strawberry.Parent[models.Generation]) -> int:
        return root.video_width or root.width

    @strawberry_django.field(description="Height in pixels: the video's once made, else the planned one.")
    async def height(self, root: strawberry.Parent[models.Generation]) -> int:
        return root.video_height or root.height

    @strawberry_django.field(description="Frames per second of its tier on its model.")
    async def fps(self, root: strawberry.Parent[models.Generation]) -> int | None:
        return root.video_fps or root.fps

    @strawberry_django.field(
        description="Frames in the video: the video's once made, else the planned count."
    )
    async def frame_count(self, root: strawberry.Parent[models.Generation]) -> int:
        return root.video_frames or root.num_frames

    @strawberry_django.field(description="The draft this final was rendered from (finalizeGeneration).")
    async def draft(self, root: strawberry.Parent[models.Generation], info: Info) -> GenerationType | None:
        if root.draft_id is None:
            return None
        return await sync_to_async(selectors.generation_visible_or_none)(
            user=info.context.user, generation_id=root.draft_id
        )

    @strawberry_django.field(description="The finals rendered from this draft, newest first.")
    async def finals(self, root: strawberry.Parent[models.Generation], info: Info) -> list[GenerationType]:
        if root.quality != models.QualityTier.DRAFT:
            return []
        return await sync_to_async(selectors.generation_finals)(user=info.context.user, draft=root)

    @strawberry_django.field(description="The MP4 (H.264), once succeeded.")
    async def video(self, root: strawberry.Parent[models.Generation], info: Info) -> MediaFile | None:
        if root.status != models.GenerationStatus.SUCCEEDED:
            return None
        return media_file(info, root, "video", content_type="video/mp4")

    @strawberry_django.field(description="A JPEG still of the video, once succeeded.")
    async def poster(self, root: strawberry.Parent[models.Generation], info: Info) -> MediaFile | None:
        if root.status != models.GenerationStatus.SUCCEEDED:
            return None
        return media_file(info, root, "poster", content_type="image/jpeg")

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        visible = queryset & selectors.generations_visible_to(user=info.context.user)
        return visible.select_related("trend__category", "route")


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
