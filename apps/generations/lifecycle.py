"""A generation's transitions that users and staff ask for: cancel, delete, share, a free retry.

The transitions that GPU workers drive (progress, success, retries, failures) are the generation kind's
hooks (apps/generations/jobs.py) run by the one job lifecycle (apps/jobs/lifecycle.py); the ends here go
through the same `job_finish`, so the hold is released and the worker stopped the same way.
"""

from __future__ import annotations

import functools
import logging
import uuid

from django.db import transaction
from django.db.models import F
from django.utils import timezone

import gpu_worker.contract as contract
from apps.characters.selectors import character_lora_base_by_id
from apps.core.errors import UnsupportedOption, ValidationFailed
from apps.jobs import dispatch
from apps.jobs.kinds import Outcome
from apps.jobs.lifecycle import job_dispatch_on_commit, job_finish
from apps.storage.backends import get_storage
from apps.trends.models import TrendStatus
from apps.trends.services import trend_share_record

from . import routing
from .events import generation_changed
from .jobs import GENERATION_JOBS
from .models import Generation, GenerationReview, GenerationStatus, ReviewStatus, generation_prefix
from .selectors import generation_get_for_user

logger = logging.getLogger(__name__)

SHARE_CHANNEL_MAX = 32


def generation_cancel(*, user, generation_id) -> Generation:
    """Cancels a queued or running generation: it never runs (queued) or stops within one denoising
    step (running), and its hold is released. A finished generation is returned as it is."""
    with transaction.atomic():
        generation = generation_get_for_user(user=user, generation_id=generation_id, for_update=True)
        # IN_REVIEW has finished rendering: it waits for staff, like a finished one, and stays as it is
        if not generation.is_terminal and generation.status != GenerationStatus.IN_REVIEW:
            generation.cancel_requested_at = timezone.now()
            job_finish(
                GENERATION_JOBS,
                GENERATION_JOBS.job(generation),
                outcome=Outcome.CANCELED,
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
            job_finish(
                GENERATION_JOBS,
                GENERATION_JOBS.job(generation),
                outcome=Outcome.CANCELED,
                code=contract.CANCELED,
            )
        # an output waiting for review goes with it: nothing is left for staff to decide
        GenerationReview.objects.filter(generation=generation, status=ReviewStatus.PENDING).update(
            status=ReviewStatus.WITHDRAWN, outputs={}, decided_at=timezone.now()
        )
        prefix = generation_prefix(generation)
        generation.deleted_at = timezone.now()
        generation.video_key = generation.poster_key = ""
        generation_changed(generation)
        transaction.on_commit(functools.partial(_delete_prefix, prefix))
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
            lora = (
                character_lora_base_by_id(character_id=generation.character_id)
                if generation.lora_key
                else None
            )
            route = routing.route_fallback(
                route, needs_image=bool(generation.image_key), needs_lora=bool(generation.lora_key), lora=lora
            )
            if route is None:
                raise UnsupportedOption("No enabled model route can run this generation now.")
            generation.route, generation.route_name = route, route.name
            generation.width, generation.height, generation.num_frames = routing.job_size(
                route,
                aspect_ratio=generation.aspect_ratio,
                duration_seconds=generation.duration_seconds,
                quality=generation.quality,
            )
            generation.fps = route.profile(generation.quality).fps
        generation.route_attempts = 1
        generation.finished_at = None
        generation.failure_code = generation.failure_message = ""
        generation.failure_retryable = False
        GENERATION_JOBS.requeue(generation, at=timezone.now())
        job_id = str(generation.pk)
        transaction.on_commit(lambda: dispatch.cancel_flag_clear(job_id), robust=True)
        job_dispatch_on_commit(GENERATION_JOBS, job_id=job_id, attempt=generation.attempt)
    return generation
