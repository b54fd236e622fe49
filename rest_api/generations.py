"""/v1/generations: create (one, or a batch), get, list, cancel, and /v1/quotes. Each handler parses,
calls one service or selector with the organization's account, and shapes the answer."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.db.models import Q
from django.http import HttpRequest
from ninja import Header, Query, Router, Status
from pydantic import ValidationError

from apps.core.errors import DomainError, ValidationFailed
from apps.generations.models import Generation
from apps.generations.selectors import generation_estimate, generation_get_for_user, generations_visible_to
from apps.generations.services import (
    GenerationRequest,
    generation_cancel,
    generation_create,
    generation_quote,
)
from apps.storage.backends import get_storage

from .auth import READ, WRITE, account_of
from .problems import Problem, problem_from, validation_problem
from .schemas import (
    BatchCreate,
    BatchItem,
    BatchOut,
    BatchResult,
    GenerationCreate,
    GenerationOut,
    GenerationPage,
    QuoteOut,
)

router = Router(tags=["generations"])
ERRORS = {400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem, 422: Problem, 429: Problem}


def _request(body: GenerationCreate, idempotency_key: str | None) -> GenerationRequest:
    return GenerationRequest(
        trend_slug=body.trend_slug,
        prompt=body.prompt,
        character_id=body.character_id,
        photo_upload_id=body.photo_upload_id,
        image_url=body.image_url,
        aspect_ratio=body.aspect_ratio,
        duration_seconds=body.duration_seconds,
        quality=body.quality,
        speed=body.speed,
        seed=body.seed,
        idempotency_key=idempotency_key,
        with_sound=body.with_sound,
    )


def _url(request: HttpRequest, key: str) -> str:
    url = get_storage().download_url(key)
    return request.build_absolute_uri(url) if url.startswith("/") else url


def generation_out(request: HttpRequest, g: Generation, *, estimate: bool = False) -> GenerationOut:
    video = poster = None
    if g.video_key:
        video = {
            "url": _url(request, g.video_key),
            "content_type": "video/mp4",
            "bytes": g.video_bytes,
            "width": g.video_width,
            "height": g.video_height,
            "fps": g.video_fps,
            "duration_seconds": g.video_duration_seconds,
        }
    if g.poster_key:
        poster = {
            "url": _url(request, g.poster_key),
            "content_type": "image/jpeg",
            "bytes": g.poster_bytes,
            "width": g.poster_width,
            "height": g.poster_height,
        }
    position = eta = None
    if estimate:
        queue = generation_estimate(g)
        position, eta = queue.position, queue.eta_seconds
    return GenerationOut(
        id=str(g.pk),
        status=g.status,
        stage=g.stage or None,
        progress=g.progress,
        trend_slug=g.trend_slug or None,
        prompt=g.prompt,
        character_id=str(g.character_id) if g.character_id else None,
        aspect_ratio=g.aspect_ratio,
        duration_seconds=g.duration_seconds,
        quality=g.quality,
        speed=g.lane,
        credits_quoted=g.quoted_credits,
        credits_charged=g.credits_charged,
        failure_code=g.failure_code or None,
        failure_message=g.failure_message or None,
        queue_position=position,
        eta_seconds=eta,
        video=video,
        poster=poster,
        idempotency_key=g.idempotency_key,
        created_at=g.created_at,
        finished_at=g.finished_at,
    )


@router.post(
    "/generations",
    auth=WRITE,
    response={201: GenerationOut, 402: Problem, **ERRORS},
    summary="Create a generation",
    description="Holds its price in credits and queues it. The `Idempotency-Key` header is required: "
    "the same key with the same body returns the first generation (charged once); with another body, "
    "422 IDEMPOTENCY_KEY_REUSED.",
)
def create_generation(
    request: HttpRequest,
    body: GenerationCreate,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
):
    generation = generation_create(user=account_of(request), request=_request(body, idempotency_key))
    return Status(201, generation_out(request, generation, estimate=True))


@router.post(
    "/generations/batch",
    auth=WRITE,
    response={200: BatchOut, **ERRORS},
    summary="Create up to 100 generations",
    description="Answers one result per item, in order: an `id`, or an `error` (problem details) for an "
    "item that failed alone. Each item's idempotency key is its own `idempotency_key`, or "
    "`<Idempotency-Key header>:<index>`.",
)
async def create_generations_batch(
    request: HttpRequest,
    body: BatchCreate,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
):
    # Async, with each item created in a pool thread: a batch of 100 takes seconds, and a sync view would
    # hold the process's one thread for sync code (every GraphQL service call waits on it) all along.
    account = account_of(request)  # loaded with the key: no query here
    create_item = sync_to_async(_batch_item, thread_sensitive=False)
    results = [
        await create_item(account, index, raw, idempotency_key) for index, raw in enumerate(body.items)
    ]
    accepted = sum(1 for result in results if result.id)
    return Status(200, BatchOut(data=results, accepted=accepted, failed=len(results) - accepted))


def _batch_item(account, index: int, raw, batch_key: str | None) -> BatchResult:
    """One item of a batch: its id, or the problem that it alone fails with."""
    try:
        try:
            item = raw if isinstance(raw, BatchItem) else BatchItem.model_validate(raw)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            return BatchResult(index=index, id=None, error=validation_problem(errors))
        key = item.idempotency_key or (f"{batch_key}:{index}" if batch_key else None)
        try:
            generation = generation_create(user=account, request=_request(item, key))
        except DomainError as exc:
            error = problem_from(exc)
            if error["field"] == "Idempotency-Key":
                error["field"] = "idempotency_key"
            return BatchResult(index=index, id=None, error=error)
        return BatchResult(index=index, id=str(generation.pk), error=None)
    finally:
        close_old_connections()  # a pool thread keeps no connection past CONN_MAX_AGE


@router.get("/generations/{generation_id}", auth=READ, response={200: GenerationOut, **ERRORS})
def get_generation(request: HttpRequest, generation_id: str):
    generation = generation_get_for_user(user=account_of(request), generation_id=generation_id)
    return Status(200, generation_out(request, generation, estimate=True))


def _cursor_decode(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        created, pk = base64.urlsafe_b64decode(cursor.encode() + b"==").decode().split("|")
        return dt.datetime.fromisoformat(created), uuid.UUID(pk)
    except (ValueError, binascii.Error, UnicodeError):
        raise ValidationFailed("This cursor is not one we gave; start without it.", field="cursor") from None


def _cursor_encode(g: Generation) -> str:
    return base64.urlsafe_b64encode(f"{g.created_at.isoformat()}|{g.pk}".encode()).decode().rstrip("=")


@router.get("/generations", auth=READ, response={200: GenerationPage, **ERRORS})
def list_generations(
    request: HttpRequest,
    cursor: str | None = Query(None, max_length=200, description="`next_cursor` of the previous page."),
    limit: int = Query(20, ge=1, le=settings.REST_PAGE_MAX),
):
    """The organization's generations, newest first."""
    queryset = generations_visible_to(user=account_of(request))
    if cursor:
        created, pk = _cursor_decode(cursor)
        queryset = queryset.filter(Q(created_at__lt=created) | Q(created_at=created, id__lt=pk))
    rows = list(queryset[: limit + 1])
    page = rows[:limit]
    next_cursor = _cursor_encode(page[-1]) if len(rows) > limit else None
    return Status(
        200, GenerationPage(data=[generation_out(request, g) for g in page], next_cursor=next_cursor)
    )


@router.post("/generations/{generation_id}/cancel", auth=WRITE, response={200: GenerationOut, **ERRORS})
def cancel_generation(request: HttpRequest, generation_id: str):
    """Cancels a queued or running generation (its credits are released); a finished one is returned as is."""
    generation = generation_cancel(user=account_of(request), generation_id=generation_id)
    return Status(200, generation_out(request, generation))


@router.post("/quotes", auth=READ, response={200: QuoteOut, **ERRORS})
def quote_generation(request: HttpRequest, body: GenerationCreate):
    """The price in credits and the ETA of a generation, with the organization's balance. Changes nothing."""
    quote = generation_quote(user=account_of(request), request=_request(body, None))
    return Status(
        200,
        QuoteOut(
            credits=quote.credits,
            eta_seconds=quote.eta_seconds,
            balance=quote.balance,
            route=quote.route.name,
            quality=quote.quality,
            speed=quote.lane,
            aspect_ratio=quote.aspect_ratio,
            duration_seconds=quote.duration_seconds,
        ),
    )
