"""The /v1 request and response bodies (pydantic through ninja; the OpenAPI document is made from them).
Enums come from the model choices, never mirrored by hand."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from django.conf import settings
from ninja import Field, Schema

from apps.generations.models import GenerationStage, GenerationStatus, Lane
from apps.trends.models import AspectRatio, QualityTier

AspectRatioName = Literal[tuple(AspectRatio.values)]  # type: ignore[valid-type]
QualityName = Literal[tuple(QualityTier.values)]  # type: ignore[valid-type]
SpeedName = Literal[tuple(Lane.values)]  # type: ignore[valid-type]
StatusName = Literal[tuple(GenerationStatus.values)]  # type: ignore[valid-type]
StageName = Literal[tuple(GenerationStage.values)]  # type: ignore[valid-type]


class GenerationCreate(Schema):
    """A trend (by slug) or a prompt; a selfie (an upload's id or an image URL) or a Soul ID of the
    organization."""

    trend_slug: str | None = Field(None, max_length=80)
    prompt: str | None = Field(None, max_length=2000)
    character_id: str | None = Field(None, max_length=64, description="A ready Soul ID of the organization.")
    photo_upload_id: str | None = Field(None, max_length=64, description="An upload from POST /v1/uploads.")
    image_url: str | None = Field(
        None,
        max_length=2000,
        description="A selfie by URL instead of `photo_upload_id`: an http(s) URL on a public address that "
        "answers a JPEG, PNG, HEIC or WebP file within 10 s and 15 MB (redirects followed up to 3 times). "
        "Fetched when the generation is created and checked like an upload; a URL that cannot be used is "
        "a 422 naming `image_url`, and nothing is charged.",
    )
    aspect_ratio: AspectRatioName | None = None
    duration_seconds: int | None = Field(None, ge=1, le=60)
    quality: QualityName | None = None
    speed: SpeedName | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    with_sound: bool = True


class BatchItem(GenerationCreate):
    idempotency_key: str | None = Field(
        None, max_length=255, description="Defaults to `<Idempotency-Key header>:<index>`."
    )


class BatchCreate(Schema):
    # A malformed item fails alone: what is not a BatchItem is kept as the object it is, and the
    # handler answers that item with the fields to fix.
    items: list[BatchItem | dict[str, Any]] = Field(
        ..., min_length=1, max_length=settings.REST_BATCH_MAX_ITEMS
    )


class Media(Schema):
    url: str
    content_type: str
    bytes: int | None = None
    width: int | None = None
    height: int | None = None


class Video(Media):
    fps: int | None = None
    duration_seconds: float | None = None


class GenerationOut(Schema):
    id: str
    object: Literal["generation"] = "generation"
    status: StatusName
    stage: StageName | None
    progress: float
    trend_slug: str | None
    prompt: str
    character_id: str | None
    aspect_ratio: AspectRatioName
    duration_seconds: int
    quality: QualityName
    speed: SpeedName
    credits_quoted: int
    credits_charged: int
    failure_code: str | None
    failure_message: str | None
    queue_position: int | None = None
    eta_seconds: int | None = None
    video: Video | None
    poster: Media | None
    idempotency_key: str
    created_at: dt.datetime
    finished_at: dt.datetime | None


class GenerationPage(Schema):
    data: list[GenerationOut]
    next_cursor: str | None


class QuoteOut(Schema):
    credits: int
    eta_seconds: int
    balance: int
    route: str
    quality: QualityName
    speed: SpeedName
    aspect_ratio: AspectRatioName
    duration_seconds: int


class BatchResult(Schema):
    index: int
    id: str | None
    error: dict[str, Any] | None = Field(None, description="A problem details object for a failed item.")


class BatchOut(Schema):
    data: list[BatchResult]
    accepted: int
    failed: int


class UploadsCreate(Schema):
    count: int = Field(1, ge=1, le=20)
    content_type: str = Field("image/jpeg", max_length=40)


class NameValue(Schema):
    name: str
    value: str


class UploadTargetOut(Schema):
    upload_id: str
    url: str
    method: str
    fields: list[NameValue]
    headers: list[NameValue]
    file_field: str
    expires_at: dt.datetime
    max_bytes: int


class UploadsOut(Schema):
    data: list[UploadTargetOut]
