"""A user's generation requests: checked and completed with defaults, quoted, created and held.

`generation_quote` prices a request and changes nothing; `generation_create` is idempotent per user and key,
holds the price in the same transaction as the row, and hands the first attempt to the one job lifecycle
(apps/jobs) after the commit.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.characters.selectors import character_lora_for_user, character_reference_photo_key
from apps.characters.services import character_mark_used
from apps.core.errors import (
    IdempotencyInProgress,
    IdempotencyKeyReused,
    NotFound,
    RateLimited,
    UnsupportedOption,
    UploadInvalid,
    ValidationFailed,
)
from apps.core.table_cache import table_versions_pinned
from apps.credits.selectors import credits_balance
from apps.credits.services import credits_hold
from apps.jobs.lifecycle import job_dispatch_on_commit
from apps.moderation.services import prompt_check
from apps.organizations.selectors import organization_generation_cap_locking_account
from apps.storage.models import UploadStatus
from apps.storage.selectors import upload_get_for_user
from apps.storage.services import upload_from_url, upload_verify
from apps.trends.models import AspectRatio, QualityTier, Requirement, Trend, TrendStatus

from . import routing
from .fair_share import share_admits
from .jobs import GENERATION_JOBS, count_trend, generation_plan, generation_subject
from .models import Generation, GenerationStatus, Lane, ModelRoute
from .pricing import price_credits
from .selectors import generation_get_for_user, new_job_eta_seconds
from .selfies import selfie_check

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, like a UUID
MAX_SEED = 2**31 - 1  # a GraphQL Int

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
    with_sound: bool = True  # the trend's sound in the video (a trend without one gives a silent video)
    image_url: str | None = None  # a selfie by URL (/v1), fetched by the create instead of an upload

    def fingerprint(self) -> str:
        """The request without its key: two requests are "the same" when these are equal. `with_sound`
        counts only when off, and `image_url` only when set, so requests made before they existed keep
        their fingerprints."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "idempotency_key"}
        if fields["with_sound"]:
            del fields["with_sound"]
        if fields["image_url"] is None:
            del fields["image_url"]
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
    sound_key: str = ""  # the trend's sound to mux in; empty: a silent video


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
    try:
        pk = uuid.UUID(str(character_id))
    except ValueError:
        raise NotFound("This Soul ID does not exist.", field="characterId") from None
    return pk, *character_lora_for_user(user=user, character_id=pk)


def _upload(*, user, upload_id: str, verify: bool):
    """The caller's selfie upload. With `verify` (createGeneration), verified now if it is still pending,
    then given the photo checks (selfies.py): a refused selfie is UploadInvalid naming the reason."""
    try:
        upload = upload_get_for_user(user=user, upload_id=upload_id)
    except NotFound:
        raise NotFound("This photo upload does not exist.", field="photoUploadId") from None
    if verify:
        if upload.status != UploadStatus.VERIFIED:
            try:
                upload = upload_verify(user=user, upload_id=upload.pk)
            except UploadInvalid as exc:
                raise UploadInvalid(exc.message, field="photoUploadId", **exc.extra) from None
        upload = selfie_check(upload=upload)
    elif upload.status == UploadStatus.REJECTED:
        raise UploadInvalid(upload.reject_message, field="photoUploadId", reason=upload.reject_reason)
    return upload


@table_versions_pinned()  # the catalogue's tables (terms, routes, rules): their versions in one read
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
    if for_create and prompt:  # refused before anything is held (a quote changes nothing)
        prompt_check(user=user, text=prompt, locales=user.devices.values_list("locale", flat=True))

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
    if request.image_url is not None and request.photo_upload_id:
        raise ValidationFailed("Send a photo upload or an image URL, not both.", field="imageUrl")
    if request.photo_upload_id:
        upload = _upload(user=user, upload_id=request.photo_upload_id, verify=for_create)
        image_key = upload.key if upload.status == UploadStatus.VERIFIED else ""
    elif request.image_url is not None and for_create:
        # Fetched now (a quote only prices it as a selfie), then given the same photo checks as an upload.
        upload = selfie_check(upload=upload_from_url(user=user, url=request.image_url), field="imageUrl")
        image_key = upload.key
    requires = trend.requires if trend else Requirement.NONE
    if for_create and requires == Requirement.SOUL_ID and character_id is None:
        raise ValidationFailed(
            "This trend needs your Soul ID. Create one, then try again.", field="characterId"
        )
    if for_create and requires == Requirement.SELFIE and upload is None and character_id is None:
        raise ValidationFailed("This trend needs a selfie. Add one, then try again.", field="photoUploadId")
    has_image = upload is not None or request.image_url is not None
    needs_image = has_image or (requires == Requirement.SELFIE and character_id is None)
    needs_lora = bool(lora_key) or requires == Requirement.SOUL_ID

    # 4. The model route, the job's size on it, and the price
    route = routing.route_choose(
        trend=trend, quality=quality, lane=lane, needs_image=needs_image, needs_lora=needs_lora, lora=lora
    )
    if character_id is not None and upload is None and route.image_conditioning:
        # A Soul ID and no selfie: its sharpest accepted photo is the first frame, where the route takes one.
        image_key = character_reference_photo_key(character_id=character_id)
    width, height, num_frames = routing.job_size(
        route, aspect_ratio=aspect_ratio, duration_seconds=duration, quality=quality
    )
    if not routing.job_fits(route, width=width, height=height, num_frames=num_frames, quality=quality):
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
        sound_key=trend.sound_key if trend is not None and request.with_sound else "",
    )


def _plan(resolved: Resolved) -> dict:
    subject = generation_subject(
        lora_key=resolved.lora_key, image_key=resolved.image_key, character_id=resolved.character_id
    )
    try:
        return generation_plan(
            trend=resolved.trend,
            prompt=resolved.prompt,
            route=resolved.route,
            subject=subject,
            duration=resolved.duration_seconds,
            aspect=resolved.aspect_ratio,
        )
    except ValueError as exc:
        raise ValidationFailed(f"This request cannot be planned: {exc}", field="prompt") from None


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
        quality=resolved.quality,
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
    """The generation made earlier with this key: the same one for the same request.

    A new key (nearly every call) costs one narrow query: the full row with its trend and route is a
    wide SELECT whose compilation alone took about 3 ms of CPU, so it is read only for a replay."""
    existing = (
        Generation.objects.filter(owner=user, idempotency_key=key)
        .values_list("pk", "request_hash", "deleted_at")
        .order_by()[:1]
    )
    if not existing:
        return None
    pk, request_hash, deleted_at = existing[0]
    if request_hash != fingerprint:
        raise IdempotencyKeyReused(
            "This idempotency key was used for a different request. Send a new key for a new video.",
            field="idempotencyKey",
        )
    if deleted_at is not None:
        raise NotFound("The video made with this key was deleted.", field="idempotencyKey")
    return Generation.objects.select_related("trend__category", "route").get(pk=pk)


def _check_active_limit(user, *, organization_cap: int | None) -> None:
    # An organization's generations beyond its window wait for their share (fair_share.py): it may have
    # many more at once than an app user.
    most = (
        settings.GENERATIONS_MAX_ACTIVE_PER_ORGANIZATION
        if organization_cap is not None
        else settings.GENERATIONS_MAX_ACTIVE_PER_USER
    )
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

    def resolve() -> tuple[Resolved, dict, Generation | None]:
        resolved = _resolve(user=user, request=request, for_create=True)
        return resolved, _plan(resolved), None

    return _create_once(
        user=user,
        key=_idempotency_key(request.idempotency_key),
        fingerprint=request.fingerprint(),
        resolve=resolve,
    )


# --- Finalize: a draft rendered again at a higher tier ---------------------------------------------


def _tier_rank(quality: str) -> int:
    return list(QualityTier.values).index(quality)


def _resolve_final(*, user, draft_id, quality: str) -> tuple[Resolved, dict, Generation]:
    """A final of the caller's succeeded DRAFT at `quality`: the same inputs, seed (the one the worker
    used), shot plan, sound and route (so the same model family), sized and priced for the final tier."""
    if quality not in QualityTier.values:
        raise ValidationFailed(f"Choose a quality: one of {', '.join(QualityTier.values)}.", field="quality")
    draft = generation_get_for_user(user=user, generation_id=draft_id)
    if draft.prompt:  # the user's text goes to the model again: checked against today's term lists
        prompt_check(
            user=user, text=draft.prompt, locales=user.devices.values_list("locale", flat=True), field="id"
        )
    if draft.quality != QualityTier.DRAFT:
        raise ValidationFailed("Only a draft can be finalized; this video is already final.", field="id")
    if draft.status != GenerationStatus.SUCCEEDED:
        raise ValidationFailed("Only a finished draft can be finalized. Make a new draft.", field="id")
    if _tier_rank(quality) <= _tier_rank(QualityTier.DRAFT):
        raise ValidationFailed("Finalize at a quality above the draft: Standard or Cinema.", field="quality")
    route = draft.route
    if route is None or not route.enabled:
        raise UnsupportedOption(
            "The model this draft was made with is no longer available. Make a new video.", field="id"
        )
    if draft.inputs_purged_at is not None:
        days = settings.GENERATIONS_INPUT_RETENTION_DAYS
        raise ValidationFailed(
            f"The selfie of this draft was deleted {days} days after it was used. Make a new video.",
            field="id",
        )
    if draft.lora_key and draft.character_id is not None:  # its Soul ID still there and ready
        _character_lora(user=user, character_id=str(draft.character_id))
    if quality not in route.quality_tiers or draft.lane not in route.lanes:
        tiers = [t for t in route.quality_tiers if _tier_rank(t) > _tier_rank(QualityTier.DRAFT)]
        raise UnsupportedOption(
            f"{QualityTier(quality).label} quality is not offered for this draft."
            + (f" Choose {' or '.join(tiers)}." if tiers else ""),
            field="quality",
        )
    width, height, num_frames = routing.job_size(
        route, aspect_ratio=draft.aspect_ratio, duration_seconds=draft.duration_seconds, quality=quality
    )
    if not routing.job_fits(route, width=width, height=height, num_frames=num_frames, quality=quality):
        raise UnsupportedOption("This draft is too long for a final on this model.", field="quality")
    credits = price_credits(
        trend=draft.trend,
        route=route,
        quality=quality,
        duration_seconds=draft.duration_seconds,
        lane=draft.lane,
    )
    if settings.GENERATIONS_FINAL_CREDITS_DRAFT:
        credits = max(credits - draft.credits_charged, 1)
    resolved = Resolved(
        trend=draft.trend,
        prompt=draft.prompt,
        aspect_ratio=draft.aspect_ratio,
        duration_seconds=draft.duration_seconds,
        quality=quality,
        lane=draft.lane,
        seed=draft.seed_used if draft.seed_used is not None else draft.seed,
        upload=draft.photo_upload,
        image_key=draft.image_key,
        character_id=draft.character_id,
        lora_key=draft.lora_key,
        route=route,
        width=width,
        height=height,
        num_frames=num_frames,
        credits=credits,
        # The draft's sound (or its silence): the trend's sound now, as a replaced one's file is deleted
        sound_key=draft.trend.sound_key if draft.sound_key and draft.trend is not None else "",
    )
    return resolved, dict(draft.plan or {}), draft


def generation_finalize(*, user, generation_id, quality: str, idempotency_key: str | None) -> Generation:
    """Renders the caller's succeeded DRAFT again at STANDARD or CINEMA (finalizeGeneration): a new
    generation linked to its draft (`draft`, and the draft's `finals`), priced as its tier and held like
    `generation_create`, idempotent per user and key the same way. Nothing is held on a refusal:
    NOT_FOUND (someone else's or missing), VALIDATION (not a draft, not succeeded, a quality that is not
    above DRAFT), UNSUPPORTED_OPTION (its route is gone or does not offer the tier)."""
    fingerprint = hashlib.sha256(
        json.dumps({"finalize": str(generation_id), "quality": quality}, sort_keys=True).encode()
    ).hexdigest()
    return _create_once(
        user=user,
        key=_idempotency_key(idempotency_key),
        fingerprint=fingerprint,
        resolve=lambda: _resolve_final(user=user, draft_id=generation_id, quality=quality),
    )


def _create_once(*, user, key: str, fingerprint: str, resolve) -> Generation:
    """What creates share: the replay by key, the claim that keeps two requests with one key apart, and
    the insert (`resolve()` gives the resolved request, its plan and the draft it finalizes, if any)."""
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
        resolved, plan, draft = resolve()
        try:
            return _create(
                user=user, key=key, fingerprint=fingerprint, resolved=resolved, plan=plan, draft=draft
            )
        except IntegrityError:  # the same key committed by a request that outlived its claim
            replay = _replay(user=user, key=key, fingerprint=fingerprint)
            if replay is None:
                raise
            return replay
    finally:
        cache.delete(claim)


@transaction.atomic
def _create(
    *, user, key: str, fingerprint: str, resolved: Resolved, plan: dict, draft: Generation | None = None
) -> Generation:
    # One user's creates run one at a time: the active-job limit and the organization's share cannot race.
    # The key needs no second look under the lock: a request with the same key that committed meanwhile
    # makes the insert below fail on the (owner, idempotency_key) constraint, before anything is held, and
    # `_create_once` replays it.
    # None for an app user; the count below reads after the lock, so it sees every create before this one.
    organization_cap = organization_generation_cap_locking_account(account_id=user.pk)
    _check_active_limit(user, organization_cap=organization_cap)
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
        sound_key=resolved.sound_key,
        aspect_ratio=resolved.aspect_ratio,
        duration_seconds=resolved.duration_seconds,
        quality=resolved.quality,
        lane=resolved.lane,
        seed=resolved.seed if resolved.seed is not None else secrets.randbelow(MAX_SEED + 1),
        quoted_credits=resolved.credits,
        plan=plan,
        draft=draft,
        route=route,
        route_name=route.name,
        width=resolved.width,
        height=resolved.height,
        num_frames=resolved.num_frames,
        fps=route.profile(resolved.quality).fps,
        status=GenerationStatus.QUEUED,
        queued_at=now,
        idempotency_key=key,
        request_hash=fingerprint,
        api_sequence=1,
        share_held=not share_admits(owner_id=user.pk, window=organization_cap),
    )
    # The related rows were just read; checking them again would cost a query each.
    generation.full_clean(
        exclude=["owner", "trend", "photo_upload", "route", "draft"],
        validate_unique=False,
        validate_constraints=False,
    )
    generation.save(force_insert=True)  # a duplicate key: IntegrityError, this block rolls back whole
    credits_hold(user=user, amount=resolved.credits, owner=generation, reason="generation")
    if resolved.character_id is not None:
        character_mark_used(character_id=resolved.character_id)  # retention counts from the last use
    if not generation.share_held:
        job_dispatch_on_commit(GENERATION_JOBS, job_id=str(generation.pk), attempt=1, row=generation)
    if trend is not None:
        transaction.on_commit(functools.partial(count_trend, trend_id=trend.pk, succeeded=False))
    return generation
