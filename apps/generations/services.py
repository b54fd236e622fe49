"""Generations: quote, create, cancel, delete, share; the GPU workers' events; the watchdog.

Money: credits are held when a generation is created (in the same transaction), captured once when it
succeeds, released when it fails, is canceled, expires or is deleted before finishing. The ledger
(apps/credits) settles a hold exactly once, and every transition here is made with the generation's row
locked, so a repeated or late event changes nothing.

Jobs go to the GPU workers only after the commit, through apps/core/dispatch.py. Every change is
published to the generation's group with a sequence that grows by one (apps/generations/events.py).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

import gpu_worker.contract as contract
from apps.core import dispatch
from apps.core.errors import (
    IdempotencyInProgress,
    IdempotencyKeyReused,
    NotFound,
    RateLimited,
    UnsupportedOption,
    UploadInvalid,
    ValidationFailed,
)
from apps.credits.selectors import credits_balance
from apps.credits.services import credits_capture, credits_hold, credits_release
from apps.storage.backends import get_storage
from apps.storage.models import UploadStatus
from apps.storage.selectors import upload_get_for_user
from apps.storage.services import upload_verify
from apps.trends.models import AspectRatio, QualityTier, Requirement, Trend, TrendStatus

from . import routing
from .events import generation_changed
from .models import (
    CONTRACT_ASPECT_RATIOS,
    EXPIRED,
    Generation,
    GenerationStatus,
    Lane,
    ModelRoute,
    generation_prefix,
)
from .planner import ShotDefaults, plan_shot
from .pricing import price_credits
from .selectors import generation_get_for_user, new_job_eta_seconds

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, like a UUID
MAX_SEED = 2**31 - 1  # a GraphQL Int
SHARE_CHANNEL_MAX = 32
SUBJECT_SELFIE = "the person in the photo"
SUBJECT_SOUL_ID = "the person"

# What a user is told when a generation fails, by reason code. BAD_INPUT uses the worker's own message
# (the contract says it is safe to show).
FAILURE_MESSAGES: dict[str, str] = {
    contract.OUT_OF_MEMORY: "Our video servers were too busy to finish this video.",
    contract.WORKER_LOST: "The server making this video stopped responding.",
    contract.MODEL_UNAVAILABLE: "The video model is not available right now.",
    contract.TIMED_OUT: "This video took too long to make.",
    contract.INTERNAL: "Something went wrong while making this video.",
    contract.BAD_INPUT: "The photo or the request could not be used.",
    contract.MODERATION: "This request is not allowed by our content rules.",
    contract.QUALITY_FAILED: "The video did not pass our quality check.",
    contract.CANCELED: "This video was canceled.",
    EXPIRED: "No video server was free in time.",
}
# Failure reasons a push can name (apps/notifications/messages.py REASON_CODES).
PUSH_REASONS = {
    contract.MODERATION: "MODERATION",
    contract.QUALITY_FAILED: "QUALITY",
    contract.TIMED_OUT: "TIMED_OUT",
    contract.BAD_INPUT: "BAD_INPUT",
}


# --- Requests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationRequest:
    """What the app asked for (API.md GenerationInput); None means "the default"."""

    trend_slug: str | None = None
    prompt: str | None = None
    character_id: str | None = None
    photo_upload_id: str | None = None
    aspect_ratio: str | None = None
    duration_seconds: int | None = None
    quality: str | None = None
    speed: str | None = None
    seed: int | None = None
    idempotency_key: str | None = None

    def fingerprint(self) -> str:
        """The request without its key: two requests are "the same" when these are equal."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "idempotency_key"}
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Resolved:
    """A request checked and completed with defaults, a route, a size and a price."""

    trend: Trend | None
    prompt: str
    aspect_ratio: str
    duration_seconds: int
    quality: str
    lane: str
    seed: int | None
    upload: Any
    image_key: str
    character_id: uuid.UUID | None
    lora_key: str
    route: ModelRoute
    width: int
    height: int
    num_frames: int
    credits: int


@dataclass(frozen=True)
class Quote:
    credits: int
    eta_seconds: int
    balance: int
    route: ModelRoute
    quality: str
    lane: str
    aspect_ratio: str
    duration_seconds: int


def _choice(value: str | None, choices, *, default: str, field: str, what: str) -> str:
    if value is None or value == "":
        return default
    if value not in choices.values:
        raise ValidationFailed(f"Choose a {what}: one of {', '.join(choices.values)}.", field=field)
    return value


def _trend(slug: str) -> Trend:
    trend = Trend.objects.select_related("category").filter(slug=slug.strip()).first()
    if trend is None or trend.status in (TrendStatus.DRAFT, TrendStatus.SCHEDULED):
        raise NotFound("This trend does not exist.", field="trendSlug")
    if trend.status == TrendStatus.RETIRED or (trend.retire_at and trend.retire_at <= timezone.now()):
        raise NotFound("This trend is no longer available. Pick another one.", field="trendSlug")
    return trend


def _character_lora(*, user, character_id: str) -> tuple[uuid.UUID, str, tuple[str, str]]:
    """The LoRA key of the caller's ready Soul ID and the (family, base checkpoint) it was trained for:
    NotFound (missing, or someone else's) or CHARACTER_NOT_READY (still training, failed)."""
    from apps.characters.selectors import character_lora_for_user

    try:
        pk = uuid.UUID(str(character_id))
    except ValueError:
        raise NotFound("This Soul ID does not exist.", field="characterId") from None
    return pk, *character_lora_for_user(user=user, character_id=pk)


def _generation_lora(generation: Generation) -> tuple[str, str] | None:
    """(family, base checkpoint) of a generation's Soul ID LoRA, for its fallback route; None: no LoRA."""
    if not generation.lora_key:
        return None
    from apps.characters.selectors import character_lora_base_by_id

    return character_lora_base_by_id(character_id=generation.character_id)


def _upload(*, user, upload_id: str, verify: bool):
    """The caller's selfie upload: verified now if it is still pending (when `verify`)."""
    try:
        upload = upload_get_for_user(user=user, upload_id=upload_id)
    except NotFound:
        raise NotFound("This photo upload does not exist.", field="photoUploadId") from None
    if verify and upload.status != UploadStatus.VERIFIED:
        try:
            upload = upload_verify(user=user, upload_id=upload.pk)
        except UploadInvalid as exc:
            raise UploadInvalid(exc.message, field="photoUploadId", **exc.extra) from None
    elif upload.status == UploadStatus.REJECTED:
        raise UploadInvalid(upload.reject_message, field="photoUploadId", reason=upload.reject_reason)
    return upload


def _resolve(*, user, request: GenerationRequest, for_create: bool) -> Resolved:
    """Checks a request and fills in its defaults; a typed error names the input to fix.

    A quote (`for_create=False`) may come before the user picked a selfie or a Soul ID: it is priced as
    if the trend's requirement were met, and an upload is not verified yet."""
    # 1. A trend, or a prompt
    trend = _trend(request.trend_slug) if request.trend_slug else None
    prompt = (request.prompt or "").strip()
    most = settings.GENERATIONS_PROMPT_MAX_CHARS
    if len(prompt) > most:
        raise ValidationFailed(f"Keep the prompt to {most} characters; it has {len(prompt)}.", field="prompt")
    if trend is None and not prompt:
        raise ValidationFailed("Choose a trend or write a prompt.", field="trendSlug")

    # 2. The options, within what the trend offers
    aspect_ratio = _choice(
        request.aspect_ratio,
        AspectRatio,
        default=trend.default_aspect_ratio if trend else AspectRatio.PORTRAIT_9_16,
        field="aspectRatio",
        what="aspect ratio",
    )
    allowed = trend.aspect_ratios if trend else list(AspectRatio.values)
    if aspect_ratio not in allowed:
        labels = " or ".join(AspectRatio(value).label for value in allowed)
        raise UnsupportedOption(f"This trend is made in {labels}. Choose one of those.", field="aspectRatio")
    durations = list(trend.durations) if trend else list(settings.GENERATIONS_PROMPT_DURATIONS)
    duration = request.duration_seconds
    if duration is None:
        duration = trend.default_duration_seconds if trend else durations[0]
    if duration not in durations:
        choices = " or ".join(f"{value} s" for value in durations)
        raise UnsupportedOption(f"Choose a length of {choices}.", field="durationSeconds")
    quality = _choice(
        request.quality,
        QualityTier,
        default=trend.default_quality if trend else QualityTier.STANDARD,
        field="quality",
        what="quality",
    )
    lane = _choice(request.speed, Lane, default=Lane.INSTANT, field="speed", what="speed")
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
        raise ValidationFailed(f"The seed is a whole number from 0 to {MAX_SEED}.", field="seed")

    # 3. Who is in the video: a Soul ID, a selfie, or nobody
    character_id, lora_key, lora = None, "", None
    if request.character_id:
        character_id, lora_key, lora = _character_lora(user=user, character_id=request.character_id)
    upload, image_key = None, ""
    if request.photo_upload_id:
        upload = _upload(user=user, upload_id=request.photo_upload_id, verify=for_create)
        image_key = upload.key if upload.status == UploadStatus.VERIFIED else ""
    requires = trend.requires if trend else Requirement.NONE
    if for_create and requires == Requirement.SOUL_ID and character_id is None:
        raise ValidationFailed(
            "This trend needs your Soul ID. Create one, then try again.", field="characterId"
        )
    if for_create and requires == Requirement.SELFIE and upload is None and character_id is None:
        raise ValidationFailed("This trend needs a selfie. Add one, then try again.", field="photoUploadId")
    needs_image = upload is not None or (requires == Requirement.SELFIE and character_id is None)
    needs_lora = bool(lora_key) or requires == Requirement.SOUL_ID

    # 4. The model route, the job's size on it, and the price
    route = routing.route_choose(
        trend=trend, quality=quality, lane=lane, needs_image=needs_image, needs_lora=needs_lora, lora=lora
    )
    if character_id is not None and upload is None and route.image_conditioning:
        # A Soul ID and no selfie: its sharpest accepted photo is the first frame, where the route takes one.
        from apps.characters.selectors import character_reference_photo_key

        image_key = character_reference_photo_key(character_id=character_id)
    width, height, num_frames = routing.job_size(route, aspect_ratio=aspect_ratio, duration_seconds=duration)
    if not routing.job_fits(route, width=width, height=height, num_frames=num_frames):
        raise UnsupportedOption(
            "This length is too long for this model. Choose a shorter one.", field="durationSeconds"
        )
    credits = price_credits(trend=trend, route=route, quality=quality, duration_seconds=duration, lane=lane)
    return Resolved(
        trend=trend,
        prompt=prompt,
        aspect_ratio=aspect_ratio,
        duration_seconds=duration,
        quality=quality,
        lane=lane,
        seed=request.seed,
        upload=upload,
        image_key=image_key,
        character_id=character_id,
        lora_key=lora_key,
        route=route,
        width=width,
        height=height,
        num_frames=num_frames,
        credits=credits,
    )


def _plan(
    *, trend: Trend | None, prompt: str, route: ModelRoute, subject: str, duration: int, aspect: str
) -> dict:
    defaults = ShotDefaults()
    if trend is not None:
        defaults = ShotDefaults(
            prompt_template=trend.prompt_template,
            negative_prompt=trend.negative_prompt,
            camera_body=trend.camera_body,
            lens=trend.lens,
            focal_length_mm=trend.focal_length_mm,
            aperture=trend.aperture,
            camera_movement=trend.camera_movement,
            movement_strength=trend.movement_strength,
            lighting=trend.lighting,
            mood=trend.mood,
        )
    try:
        plan = plan_shot(
            defaults=defaults,
            user_text=prompt,
            model_family=route.family,
            subject=subject,
            duration_seconds=duration,
            aspect_ratio=aspect,
        )
    except ValueError as exc:
        raise ValidationFailed(f"This request cannot be planned: {exc}", field="prompt") from None
    return dataclasses.asdict(plan)


def _subject(generation_or_resolved) -> str:
    if getattr(generation_or_resolved, "lora_key", ""):
        return SUBJECT_SOUL_ID
    return SUBJECT_SELFIE if generation_or_resolved.image_key else ""


# --- Quote ----------------------------------------------------------------------------------------


def generation_quote(*, user, request: GenerationRequest) -> Quote:
    """The price in credits and the ETA of a request, with the caller's balance. Changes nothing."""
    resolved = _resolve(user=user, request=request, for_create=False)
    eta = new_job_eta_seconds(
        route=resolved.route,
        lane=resolved.lane,
        width=resolved.width,
        height=resolved.height,
        num_frames=resolved.num_frames,
    )
    return Quote(
        credits=resolved.credits,
        eta_seconds=eta,
        balance=credits_balance(user=user),
        route=resolved.route,
        quality=resolved.quality,
        lane=resolved.lane,
        aspect_ratio=resolved.aspect_ratio,
        duration_seconds=resolved.duration_seconds,
    )


# --- Create ---------------------------------------------------------------------------------------


def _idempotency_key(value: str | None) -> str:
    if not isinstance(value, str) or not IDEMPOTENCY_KEY.match(value):
        raise ValidationFailed(
            "Send an idempotency key: 1 to 255 visible characters, like a UUID made when the user taps.",
            field="idempotencyKey",
        )
    return value


def _replay(*, user, key: str, fingerprint: str) -> Generation | None:
    """The generation made earlier with this key: the same one for the same request."""
    existing = (
        Generation.objects.filter(owner=user, idempotency_key=key)
        .select_related("trend__category", "route")
        .first()
    )
    if existing is None:
        return None
    if existing.request_hash != fingerprint:
        raise IdempotencyKeyReused(
            "This idempotency key was used for a different request. Send a new key for a new video.",
            field="idempotencyKey",
        )
    if existing.deleted_at is not None:
        raise NotFound("The video made with this key was deleted.", field="idempotencyKey")
    return existing


def _check_active_limit(user) -> None:
    most = settings.GENERATIONS_MAX_ACTIVE_PER_USER
    active = Generation.objects.filter(
        owner=user, status__in=[GenerationStatus.QUEUED, GenerationStatus.RUNNING], deleted_at__isnull=True
    ).count()
    if active >= most:
        raise RateLimited(
            retry_after_seconds=30,
            message=f"You have {active} videos in progress, the most at once. Wait for one to finish.",
        )


def generation_create(*, user, request: GenerationRequest) -> Generation:
    """Creates a generation, holds its price and queues its job after the commit.

    Idempotent per user and key: the same key with the same request returns the first generation (charged
    once); with another request it is IDEMPOTENCY_KEY_REUSED; while the first is still being handled,
    IDEMPOTENCY_IN_PROGRESS. Keys live with their generations (never purged), so well over 24 hours.
    """
    key = _idempotency_key(request.idempotency_key)
    fingerprint = request.fingerprint()
    replay = _replay(user=user, key=key, fingerprint=fingerprint)
    if replay is not None:
        return replay
    claim = f"generations:idempotency:{user.pk}:{hashlib.sha256(key.encode()).hexdigest()}"
    if not cache.add(claim, 1, timeout=settings.GENERATIONS_IDEMPOTENCY_CLAIM_SECONDS):
        replay = _replay(user=user, key=key, fingerprint=fingerprint)
        if replay is not None:
            return replay
        raise IdempotencyInProgress(field="idempotencyKey")
    try:
        resolved = _resolve(user=user, request=request, for_create=True)
        plan = _plan(
            trend=resolved.trend,
            prompt=resolved.prompt,
            route=resolved.route,
            subject=_subject(resolved),
            duration=resolved.duration_seconds,
            aspect=resolved.aspect_ratio,
        )
        try:
            return _create(user=user, key=key, fingerprint=fingerprint, resolved=resolved, plan=plan)
        except IntegrityError:  # the same key committed by a request that outlived its claim
            replay = _replay(user=user, key=key, fingerprint=fingerprint)
            if replay is None:
                raise
            return replay
    finally:
        cache.delete(claim)


@transaction.atomic
def _create(*, user, key: str, fingerprint: str, resolved: Resolved, plan: dict) -> Generation:
    # One user's creates run one at a time: the active-job limit and the key check cannot race.
    list(get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk", flat=True))
    replay = _replay(user=user, key=key, fingerprint=fingerprint)
    if replay is not None:
        return replay
    _check_active_limit(user)
    now = timezone.now()
    trend, route = resolved.trend, resolved.route
    generation = Generation(
        owner=user,
        trend=trend,
        trend_slug=trend.slug if trend else "",
        prompt=resolved.prompt,
        character_id=resolved.character_id,
        photo_upload=resolved.upload,
        image_key=resolved.image_key,
        lora_key=resolved.lora_key,
        aspect_ratio=resolved.aspect_ratio,
        duration_seconds=resolved.duration_seconds,
        quality=resolved.quality,
        lane=resolved.lane,
        seed=resolved.seed if resolved.seed is not None else secrets.randbelow(MAX_SEED + 1),
        quoted_credits=resolved.credits,
        plan=plan,
        route=route,
        route_name=route.name,
        width=resolved.width,
        height=resolved.height,
        num_frames=resolved.num_frames,
        status=GenerationStatus.QUEUED,
        queued_at=now,
        idempotency_key=key,
        request_hash=fingerprint,
        api_sequence=1,
    )
    # The related rows were just read; checking them again would cost a query each.
    generation.full_clean(
        exclude=["owner", "trend", "photo_upload", "route"], validate_unique=False, validate_constraints=False
    )
    with transaction.atomic():  # a duplicate key surfaces here as IntegrityError, the outer block intact
        generation.save(force_insert=True)
    credits_hold(user=user, amount=resolved.credits, owner=generation, reason="generation")
    transaction.on_commit(functools.partial(_dispatch, generation_id=generation.pk, attempt=1), robust=True)
    if trend is not None:
        transaction.on_commit(functools.partial(_count_trend, trend_id=trend.pk, succeeded=False))
    return generation


def _count_trend(*, trend_id, succeeded: bool) -> None:
    from apps.trends.services import trend_generation_record

    try:
        trend_generation_record(trend_id=trend_id, succeeded=succeeded)
    except Exception:  # a counter must never fail a generation
        logger.exception("could not count a generation of trend %s", trend_id)


# --- Dispatch -------------------------------------------------------------------------------------


def generation_job(generation: Generation) -> contract.GenerationJob:
    """The job message of the generation's current attempt."""
    plan = generation.plan or {}
    return contract.GenerationJob(
        job_id=str(generation.pk),
        route=generation.route.spec(),
        prompt=plan.get("prompt") or generation.prompt,
        negative_prompt=plan.get("negative_prompt", ""),
        seed=int(generation.seed),
        aspect_ratio=CONTRACT_ASPECT_RATIOS[generation.aspect_ratio],
        width=generation.width,
        height=generation.height,
        num_frames=generation.num_frames,
        output_prefix=generation.output_prefix,
        attempt=generation.attempt,
        image_key=generation.image_key or None,
        lora_key=generation.lora_key or None,
    )


def _dispatch(*, generation_id, attempt: int, delay_seconds: float = 0) -> None:
    """Sends the job of `attempt` (after the commit that queued it), then its watchdog."""
    from .tasks import generation_watchdog_task

    generation = Generation.objects.select_related("route").filter(pk=generation_id).first()
    if generation is None or generation.attempt != attempt or generation.status != GenerationStatus.QUEUED:
        return
    if generation.route is None:  # the route was deleted meanwhile
        with transaction.atomic():
            locked = Generation.objects.select_for_update().filter(pk=generation_id, attempt=attempt).first()
            if locked is not None and not locked.is_terminal:
                _finish(locked, status=GenerationStatus.FAILED, code=contract.MODEL_UNAVAILABLE)
        return
    message_id = dispatch.generation_job_send(
        job=generation_job(generation), lane=generation.lane, delay_seconds=delay_seconds
    )
    Generation.objects.filter(pk=generation_id, attempt=attempt).update(job_message_id=message_id)
    first_check = delay_seconds + min(
        settings.GENERATIONS_STUCK_AFTER_SECONDS, settings.GENERATIONS_QUEUE_MAX_WAIT_SECONDS
    )
    generation_watchdog_task.send_with_options(
        args=(str(generation_id), attempt), delay=int(first_check * 1000) + 1000
    )


# --- Terminal transitions -------------------------------------------------------------------------


def _failure_message(code: str, worker_message: str = "") -> str:
    if code == contract.BAD_INPUT and worker_message:
        text = worker_message.strip().rstrip(".")
        return (text[:1].upper() + text[1:] + ".")[:250]
    return FAILURE_MESSAGES.get(code, FAILURE_MESSAGES[contract.INTERNAL])


def _push_finished(generation: Generation, *, succeeded: bool) -> None:
    """Records the push of a finished generation (sent after the commit); never fails the transition."""
    try:
        from apps.notifications.services import push_notify_generation_finished
    except ImportError:  # notifications not installed
        return
    title = generation.trend.title if generation.trend_id and generation.trend else ""
    if not title:
        title = (
            (generation.prompt[:40] + "…")
            if len(generation.prompt) > 40
            else (generation.prompt or "Your video")
        )
    try:
        with transaction.atomic():
            push_notify_generation_finished(
                user=generation.owner,
                generation_id=generation.pk,
                succeeded=succeeded,
                trend_title=title,
                reason=None if succeeded else PUSH_REASONS.get(generation.failure_code),
            )
    except Exception:
        logger.exception("could not record the push of generation %s", generation.pk)


def _delete_objects(keys: list[str]) -> None:
    storage = get_storage()
    for key in keys:
        try:
            storage.delete(key)
        except Exception:
            logger.exception("could not delete %s", key)


def _finish(
    generation: Generation, *, status: str, code: str, message: str = "", retryable: bool = False
) -> None:
    """Ends a generation that did not succeed: releases its hold, stops its job, tells the user."""
    now = timezone.now()
    generation.status = status
    generation.stage = ""
    generation.failure_code = code
    text = message or _failure_message(code)
    if not text.endswith("not charged."):
        text += " You were not charged."
    generation.failure_message = text[:300]
    generation.failure_retryable = retryable
    generation.finished_at = now
    generation.credits_charged = 0
    credits_release(owner=generation)
    job_id = str(generation.pk)
    transaction.on_commit(lambda: dispatch.cancel_flag_set(job_id), robust=True)
    generation_changed(
        generation,
        [
            "status",
            "stage",
            "failure_code",
            "failure_message",
            "failure_retryable",
            "finished_at",
            "credits_charged",
        ],
    )
    if status == GenerationStatus.FAILED:
        _push_finished(generation, succeeded=False)


def _retry_or_fail(generation: Generation, *, code: str, message: str) -> None:
    """A retryable failure: the same route again after a backoff, then the fallback route, then FAILED."""
    needs_image, needs_lora = bool(generation.image_key), bool(generation.lora_key)
    route = generation.route
    delay = 0.0
    if generation.attempt >= settings.GENERATIONS_MAX_ATTEMPTS or route is None:
        return _finish(generation, status=GenerationStatus.FAILED, code=code, message=message, retryable=True)
    if generation.route_attempts <= settings.GENERATIONS_RETRIES_PER_ROUTE and route.enabled:
        delay = settings.GENERATIONS_RETRY_BACKOFF_SECONDS * 2 ** (generation.route_attempts - 1)
        generation.route_attempts += 1
    else:
        fallback = routing.route_fallback(
            route, needs_image=needs_image, needs_lora=needs_lora, lora=_generation_lora(generation)
        )
        if fallback is None:
            return _finish(
                generation, status=GenerationStatus.FAILED, code=code, message=message, retryable=True
            )
        width, height, num_frames = routing.job_size(
            fallback, aspect_ratio=generation.aspect_ratio, duration_seconds=generation.duration_seconds
        )
        if not routing.job_fits(fallback, width=width, height=height, num_frames=num_frames):
            return _finish(
                generation, status=GenerationStatus.FAILED, code=code, message=message, retryable=True
            )
        if fallback.family != route.family:
            generation.plan = _plan(
                trend=generation.trend,
                prompt=generation.prompt,
                route=fallback,
                subject=_subject(generation),
                duration=generation.duration_seconds,
                aspect=generation.aspect_ratio,
            )
        generation.route, generation.route_name = fallback, fallback.name
        generation.width, generation.height, generation.num_frames = width, height, num_frames
        generation.route_attempts = 1
    logger.warning(
        "generation %s attempt %s failed (%s); attempt %s on %s in %.0f s",
        generation.pk,
        generation.attempt,
        code,
        generation.attempt + 1,
        generation.route_name,
        delay,
    )
    generation.attempt += 1
    generation.status = GenerationStatus.QUEUED
    generation.stage = ""
    generation.progress = 0.0
    generation.queued_at = timezone.now() + timedelta(seconds=delay)
    generation.job_message_id = ""
    generation_changed(
        generation,
        [
            "attempt",
            "route_attempts",
            "route",
            "route_name",
            "plan",
            "width",
            "height",
            "num_frames",
            "status",
            "stage",
            "progress",
            "queued_at",
            "job_message_id",
        ],
    )
    transaction.on_commit(
        functools.partial(
            _dispatch, generation_id=generation.pk, attempt=generation.attempt, delay_seconds=delay
        ),
        robust=True,
    )


def _valid_output(generation: Generation, output: Any, content_type: str) -> bool:
    return (
        isinstance(output, dict)
        and isinstance(output.get("key"), str)
        and output["key"].startswith(generation_prefix(generation))
        and output.get("content_type") == content_type
    )


def _succeed(generation: Generation, event: contract.JobEvent) -> None:
    outputs = event.outputs or {}
    video, poster = outputs.get("video"), outputs.get("poster")
    if not (
        _valid_output(generation, video, "video/mp4") and _valid_output(generation, poster, "image/jpeg")
    ):
        logger.error("generation %s: a completed event with unusable outputs: %r", generation.pk, outputs)
        return _finish(generation, status=GenerationStatus.FAILED, code=contract.INTERNAL)
    now = timezone.now()
    generation.status = GenerationStatus.SUCCEEDED
    generation.stage = ""
    generation.progress = 1.0
    generation.finished_at = now
    generation.started_at = generation.started_at or now
    generation.video_key = video["key"]
    generation.video_bytes = video.get("bytes")
    generation.video_width = video.get("width")
    generation.video_height = video.get("height")
    generation.video_fps = video.get("fps")
    generation.video_frames = video.get("num_frames")
    generation.video_duration_seconds = video.get("duration_seconds")
    generation.poster_key = poster["key"]
    generation.poster_bytes = poster.get("bytes")
    generation.poster_width = poster.get("width")
    generation.poster_height = poster.get("height")
    seed = outputs.get("seed")
    generation.seed_used = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    generation.timings = event.timings or {}
    generation.worker_outcome = "completed"
    captured = credits_capture(owner=generation)
    generation.credits_charged = generation.quoted_credits if captured else generation.credits_charged
    generation_changed(
        generation,
        [
            "status",
            "stage",
            "progress",
            "finished_at",
            "started_at",
            "video_key",
            "video_bytes",
            "video_width",
            "video_height",
            "video_fps",
            "video_frames",
            "video_duration_seconds",
            "poster_key",
            "poster_bytes",
            "poster_width",
            "poster_height",
            "seed_used",
            "timings",
            "worker_outcome",
            "credits_charged",
        ],
    )
    if event.attempt != generation.attempt:  # an earlier attempt finished after all: stop the newer one
        job_id = str(generation.pk)
        transaction.on_commit(lambda: dispatch.cancel_flag_set(job_id), robust=True)
    elif generation.route is not None and outputs.get("route") == generation.route_name:
        routing.route_record_timings(
            route_id=generation.route_id,
            timings=generation.timings,
            width=generation.width,
            height=generation.height,
            num_frames=generation.num_frames,
            route=generation.route,
        )
    if generation.trend_id:
        transaction.on_commit(functools.partial(_count_trend, trend_id=generation.trend_id, succeeded=True))
    _push_finished(generation, succeeded=True)


# --- Events from the GPU workers ------------------------------------------------------------------


def generation_event_apply(*, message: dict) -> str:
    """Applies one JobEvent message (the ACTOR_JOB_EVENT actor). Returns what it did: `applied`,
    `stale` (a sequence already seen, or an earlier attempt's progress), `final` (the generation had
    finished: nothing changes, but stray outputs are removed) or `unknown`.

    Progress is best-effort; completed and failed are applied exactly once, with the row locked.
    """
    event = contract.JobEvent.from_message(message)
    if getattr(event, "job_type", "generation") != "generation":  # a training's event: not ours
        return "unknown"
    try:
        pk = uuid.UUID(event.job_id)
    except ValueError:
        return "unknown"
    stray: list[str] = []
    with transaction.atomic():
        generation = (
            Generation.objects.select_for_update(of=("self",))
            .select_related("route", "trend")
            .filter(pk=pk)
            .first()
        )
        if generation is None:
            return "unknown"
        if generation.is_terminal or generation.deleted_at is not None:
            if event.is_terminal:
                outcome = "completed" if event.kind == "completed" else (event.reason_code or "failed")
                Generation.objects.filter(pk=pk).update(worker_outcome=outcome)
            if event.kind == "completed":
                kept = {generation.video_key, generation.poster_key} - {""}
                for output in (event.outputs or {}).values():
                    key = output.get("key") if isinstance(output, dict) else None
                    if (
                        isinstance(key, str)
                        and key.startswith(generation_prefix(generation))
                        and key not in kept
                    ):
                        stray.append(key)
            result = "final"
        elif (
            event.attempt > generation.attempt
            or event.sequence <= generation.last_worker_sequence
            or (event.attempt < generation.attempt and event.kind != "completed")
        ):
            result = "stale"
        else:
            result = "applied"
            generation.last_worker_sequence = event.sequence
            generation.last_event_at = timezone.now()
            Generation.objects.filter(pk=pk).update(
                last_worker_sequence=event.sequence, last_event_at=generation.last_event_at
            )
            if event.kind == "completed":
                _succeed(generation, event)
            elif event.kind == "failed":
                code = event.reason_code or contract.INTERNAL
                message_text = _failure_message(code, event.message)
                if code == contract.CANCELED:
                    _finish(generation, status=GenerationStatus.CANCELED, code=code)
                elif event.retryable and event.attempt == generation.attempt:
                    _retry_or_fail(generation, code=code, message=message_text)
                else:
                    _finish(generation, status=GenerationStatus.FAILED, code=code, message=message_text)
                Generation.objects.filter(pk=pk).update(worker_outcome=code)
            else:
                fields = ["stage", "progress"]
                if generation.status == GenerationStatus.QUEUED:
                    generation.status = GenerationStatus.RUNNING
                    generation.started_at = generation.started_at or timezone.now()
                    fields += ["status", "started_at"]
                if event.stage:
                    generation.stage = event.stage
                generation.progress = min(max(float(event.progress), 0.0), 1.0)
                generation_changed(generation, fields)
    if stray:
        _delete_objects(stray)
    return result


# --- Cancel, delete, share ------------------------------------------------------------------------


def generation_cancel(*, user, generation_id) -> Generation:
    """Cancels a queued or running generation: it never runs (queued) or stops within one denoising
    step (running), and its hold is released. A finished generation is returned as it is."""
    with transaction.atomic():
        generation = generation_get_for_user(user=user, generation_id=generation_id, for_update=True)
        if not generation.is_terminal:
            generation.cancel_requested_at = timezone.now()
            generation.save(update_fields=["cancel_requested_at", "updated_at"])
            _finish(
                generation,
                status=GenerationStatus.CANCELED,
                code=contract.CANCELED,
                message="You canceled this video.",
            )
    return generation


def generation_delete(*, user, generation_id) -> uuid.UUID:
    """Deletes a generation for its owner: cancels it first if it is still going, removes its video and
    poster from storage (every object under its prefix) and hides it. The row stays, so its
    idempotency key and its ledger reference keep working."""
    with transaction.atomic():
        generation = generation_get_for_user(user=user, generation_id=generation_id, for_update=True)
        if not generation.is_terminal:
            _finish(generation, status=GenerationStatus.CANCELED, code=contract.CANCELED)
        prefix = generation_prefix(generation)
        generation.deleted_at = timezone.now()
        for name in ("video_key", "poster_key"):
            setattr(generation, name, "")
        generation_changed(generation, ["deleted_at", "video_key", "poster_key"])
        transaction.on_commit(lambda: _delete_prefix(prefix))
    return generation.pk


def _delete_prefix(prefix: str) -> None:
    try:
        get_storage().delete_prefix(prefix)
    except Exception:
        logger.exception("could not delete the objects under %s", prefix)


def generation_share_record(*, user, generation_id, channel: str | None = None) -> Generation:
    """Counts a share of a finished video (and of its trend)."""
    if channel is not None and (len(channel) > SHARE_CHANNEL_MAX or not channel.strip()):
        raise ValidationFailed(
            f"The channel is a short name, up to {SHARE_CHANNEL_MAX} characters.", field="channel"
        )
    with transaction.atomic():
        generation = generation_get_for_user(user=user, generation_id=generation_id, for_update=True)
        if generation.status != GenerationStatus.SUCCEEDED:
            raise ValidationFailed("Only a finished video can be shared.", field="generationId")
        generation.shares = F("shares") + 1
        generation.save(update_fields=["shares", "updated_at"])
        generation.refresh_from_db(fields=["shares"])
        if generation.trend is not None and generation.trend.status == TrendStatus.LIVE:
            slug = generation.trend.slug
            transaction.on_commit(functools.partial(_count_trend_share, slug=slug, channel=channel))
    return generation


def _count_trend_share(*, slug: str, channel: str | None) -> None:
    from apps.trends.services import trend_share_record

    try:
        trend_share_record(slug=slug, channel=channel)
    except Exception:
        logger.info("the share of trend %s was not counted", slug, exc_info=True)


def generation_retry_by_staff(*, generation_id) -> Generation:
    """Runs a FAILED generation again, free of charge (support): a new attempt on its route, or on the
    route's fallback when the route was disabled. Its hold was released when it failed, so a success
    is not charged. Anything else is returned unchanged."""
    with transaction.atomic():
        generation = (
            Generation.objects.select_for_update(of=("self",))
            .select_related("route", "trend")
            .get(pk=generation_id)
        )
        if generation.status != GenerationStatus.FAILED or generation.deleted_at is not None:
            return generation
        route = generation.route
        if route is None or not route.enabled:
            route = routing.route_fallback(
                route,
                needs_image=bool(generation.image_key),
                needs_lora=bool(generation.lora_key),
                lora=_generation_lora(generation),
            )
            if route is None:
                raise UnsupportedOption("No enabled model route can run this generation now.")
            generation.route, generation.route_name = route, route.name
            generation.width, generation.height, generation.num_frames = routing.job_size(
                route, aspect_ratio=generation.aspect_ratio, duration_seconds=generation.duration_seconds
            )
        generation.attempt += 1
        generation.route_attempts = 1
        generation.status = GenerationStatus.QUEUED
        generation.stage = ""
        generation.progress = 0.0
        generation.queued_at = timezone.now()
        generation.finished_at = None
        generation.failure_code = generation.failure_message = ""
        generation.failure_retryable = False
        generation.job_message_id = ""
        generation_changed(
            generation,
            [
                "attempt",
                "route_attempts",
                "route",
                "route_name",
                "width",
                "height",
                "num_frames",
                "status",
                "stage",
                "progress",
                "queued_at",
                "finished_at",
                "failure_code",
                "failure_message",
                "failure_retryable",
                "job_message_id",
            ],
        )
        job_id, attempt = str(generation.pk), generation.attempt
        transaction.on_commit(lambda: dispatch.cancel_flag_clear(job_id), robust=True)
        transaction.on_commit(
            functools.partial(_dispatch, generation_id=generation.pk, attempt=attempt), robust=True
        )
    return generation


# --- Watchdog and reaper --------------------------------------------------------------------------


def generation_watchdog(*, generation_id, attempt: int, now: datetime | None = None) -> float | None:
    """Checks one attempt of a generation: a RUNNING one silent for GENERATIONS_STUCK_AFTER_SECONDS
    lost its worker (WORKER_LOST: retried like any retryable failure); a QUEUED one waiting longer than
    GENERATIONS_QUEUE_MAX_WAIT_SECONDS expires (EXPIRED: released). Returns the seconds until the next
    check, or None when there is nothing more to watch."""
    now = now or timezone.now()
    stuck_after = timedelta(seconds=settings.GENERATIONS_STUCK_AFTER_SECONDS)
    max_wait = timedelta(seconds=settings.GENERATIONS_QUEUE_MAX_WAIT_SECONDS)
    with transaction.atomic():
        generation = (
            Generation.objects.select_for_update(of=("self",))
            .select_related("route", "trend")
            .filter(pk=generation_id, attempt=attempt, deleted_at__isnull=True)
            .first()
        )
        if generation is None or generation.is_terminal:
            return None
        if generation.status == GenerationStatus.RUNNING:
            silent = now - (generation.last_event_at or generation.started_at or generation.queued_at)
            if silent >= stuck_after:
                _retry_or_fail(
                    generation, code=contract.WORKER_LOST, message=_failure_message(contract.WORKER_LOST)
                )
                return None
            return (stuck_after - silent).total_seconds()
        waited = now - generation.queued_at
        if waited >= max_wait:
            _finish(generation, status=GenerationStatus.FAILED, code=EXPIRED)
            return None
        return max(min((max_wait - waited).total_seconds(), stuck_after.total_seconds()), 1.0)


def generations_reap(*, now: datetime | None = None) -> int:
    """One sweep over every generation the watchdogs might have missed (ops, or after an outage):
    stuck RUNNING ones, expired QUEUED ones, and QUEUED ones whose job never reached the broker.
    Returns how many it changed or re-sent."""
    now = now or timezone.now()
    stuck = now - timedelta(seconds=settings.GENERATIONS_STUCK_AFTER_SECONDS)
    expired = now - timedelta(seconds=settings.GENERATIONS_QUEUE_MAX_WAIT_SECONDS)
    changed = 0
    running_stuck = Q(status=GenerationStatus.RUNNING) & (
        Q(last_event_at__lt=stuck) | Q(last_event_at__isnull=True, queued_at__lt=stuck)
    )
    queued_too_long = Q(status=GenerationStatus.QUEUED, queued_at__lt=expired)
    candidates = Generation.objects.filter(deleted_at__isnull=True).filter(running_stuck | queued_too_long)
    for generation_id, attempt in candidates.values_list("pk", "attempt"):
        if generation_watchdog(generation_id=generation_id, attempt=attempt, now=now) is None:
            changed += 1
    unsent = Generation.objects.filter(
        status=GenerationStatus.QUEUED,
        job_message_id="",
        queued_at__lt=now - timedelta(seconds=60),
        deleted_at__isnull=True,
    )
    for generation_id, attempt in unsent.values_list("pk", "attempt"):
        _dispatch(generation_id=generation_id, attempt=attempt)
        changed += 1
    return changed
