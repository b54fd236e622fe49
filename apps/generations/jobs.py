"""The generation kind of GPU job: how the one lifecycle (apps/jobs) reads, sends and changes a generation.

A generation's job is its current attempt (`GenerationJob`, sent on its lane's queue). Retryable failures
run again on the same route after a backoff (GENERATIONS_RETRIES_PER_ROUTE times), then on the route's
fallback (re-planned when the fallback is of another model family), up to GENERATIONS_MAX_ATTEMPTS. An
earlier attempt that completes after all still delivers (and the newer attempt is stopped).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import functools
import logging
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

import gpu_worker.contract as contract
from apps.characters.selectors import character_lora_base_by_id, character_trigger_by_id
from apps.jobs import dispatch
from apps.jobs.kinds import Job, JobKind, JobUnavailable, Outcome, register
from apps.jobs.lifecycle import EXPIRED
from apps.moderation.models import Decision, Subject
from apps.moderation.services import decision_record, image_moderation_model, image_thresholds
from apps.notifications.services import push_notify_generation_finished
from apps.organizations.webhooks import webhook_event_emit_safely
from apps.storage.backends import get_storage
from apps.trends.models import Trend
from apps.trends.services import trend_generation_record

from . import routing
from .events import generation_changed
from .fair_share import share_release_on_commit
from .models import (
    CONTRACT_ASPECT_RATIOS,
    Generation,
    GenerationReview,
    GenerationStatus,
    ModelRoute,
    generation_prefix,
)
from .planner import ShotDefaults, plan_shot

logger = logging.getLogger(__name__)

SUBJECT_SELFIE = "the person in the photo"
SUBJECT_SOUL_ID = "the person"  # a Soul ID without a recorded trigger token (trained before it was stored)

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


# --- Planning (also used when a request is created) ------------------------------------------------


def generation_subject(*, lora_key: str, image_key: str, character_id: uuid.UUID | None) -> str:
    """Who the prompt is about: a Soul ID's trigger token (what its LoRA was trained to bind), the person
    in the selfie, or nobody."""
    if lora_key:
        trigger = character_trigger_by_id(character_id=character_id) if character_id else ""
        return trigger or SUBJECT_SOUL_ID
    return SUBJECT_SELFIE if image_key else ""


def generation_plan(
    *, trend: Trend | None, prompt: str, route: ModelRoute, subject: str, duration: int, aspect: str
) -> dict:
    """The shot plan for a route's model family (apps/generations/planner.py), as stored on a generation."""
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
    plan = plan_shot(
        defaults=defaults,
        user_text=prompt,
        model_family=route.family,
        subject=subject,
        duration_seconds=duration,
        aspect_ratio=aspect,
        subject_is_token=subject not in ("", SUBJECT_SELFIE, SUBJECT_SOUL_ID),
    )
    return dataclasses.asdict(plan)


def moderation_spec(generation: Generation) -> contract.ModerationSpec | None:
    """What the worker's image classifier checks (None: image moderation is off): the settings'
    thresholds, made stricter by the generation's trend."""
    model = image_moderation_model()
    if not model:
        return None
    overrides = None
    if generation.trend_id is not None:  # the trend's one field, not its whole row (61 columns)
        trend = Trend.objects.filter(pk=generation.trend_id)
        overrides = trend.values_list("moderation_thresholds", flat=True).first()
    return contract.ModerationSpec(
        model=model,
        thresholds=image_thresholds(overrides=overrides),
        output_frames=settings.MODERATION_OUTPUT_FRAMES,
    )


def generation_job(generation: Generation) -> contract.GenerationJob:
    """The job message of the generation's current attempt."""
    plan = generation.plan or {}
    tier = generation.quality
    marked = generation.route.profile(tier).watermark_for(tier)
    return contract.GenerationJob(
        job_id=str(generation.pk),
        route=generation.route.spec(tier=generation.quality),
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
        sound_key=generation.sound_key or None,
        tier=generation.quality,
        watermark=settings.GENERATIONS_WATERMARK_TEXT if marked else None,
        moderation=moderation_spec(generation),
    )


def count_trend(*, trend_id, succeeded: bool) -> None:
    """Counts a generation of a trend (after the commit); a counter never fails a generation."""
    try:
        trend_generation_record(trend_id=trend_id, succeeded=succeeded)
    except Exception:
        logger.exception("could not count a generation of trend %s", trend_id)


def delete_objects(keys: list[str]) -> None:
    storage = get_storage()
    for key in keys:
        try:
            storage.delete(key)
        except Exception:
            logger.exception("could not delete %s", key)


def webhook_data(generation: Generation) -> dict[str, Any]:
    """What an organization's webhook says of a generation (GET /v1/generations/{id} has the rest)."""
    return {
        "id": str(generation.pk),
        "object": "generation",
        "status": generation.status,
        "failure_code": generation.failure_code or None,
        "failure_message": generation.failure_message or None,
        "credits_charged": generation.credits_charged,
        "idempotency_key": generation.idempotency_key,
    }


def generation_finished(generation: Generation, event_type: str) -> None:
    """An organization's generation ended: its webhooks, and its next held generation goes to its lane
    (fair_share.py). Nothing for an app user's, but the two cheap lookups."""
    webhook_event_emit_safely(
        account_id=generation.owner_id, event_type=event_type, data=webhook_data(generation)
    )
    share_release_on_commit(owner_id=generation.owner_id)


def _valid_output(generation: Generation, output: Any, content_type: str) -> bool:
    return (
        isinstance(output, dict)
        and isinstance(output.get("key"), str)
        and output["key"].startswith(generation_prefix(generation))
        and output.get("content_type") == content_type
    )


def generation_deliver(generation: Generation, *, outputs: dict, timings: dict) -> None:
    """Writes a finished job's outputs on the generation and makes it SUCCEEDED (the caller saves it
    through `generation_changed` and says what was charged)."""
    video, poster = outputs["video"], outputs["poster"]
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
    generation.seed_used = seed if _is_seed(seed) else None
    generation.timings = timings


AUTOMATIC_DECISIONS = {
    ("input", True): (Subject.INPUT_IMAGE, Decision.REFUSED),
    ("input", False): (Subject.INPUT_IMAGE, Decision.PASSED),
    ("output", True): (Subject.OUTPUT, Decision.FLAGGED),
    ("output", False): (Subject.OUTPUT, Decision.PASSED),
}


def moderation_audit(generation: Generation, event: contract.JobEvent) -> None:
    """Audits the image classifier's verdicts that a terminal event carries (one record each)."""
    for part, verdict in (event.moderation or {}).items():
        flagged = bool(verdict.get("flagged"))
        subject, decision = AUTOMATIC_DECISIONS[(part, flagged)]
        decision_record(
            subject=subject,
            decision=decision,
            user=generation.owner,
            object_ref=str(generation.pk),
            categories=verdict.get("categories") or [],
            scores=verdict.get("scores") or {},
            detail=f"model {verdict.get('model', '')}, attempt {event.attempt}",
        )


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- The kind -------------------------------------------------------------------------------------


class GenerationJobs(JobKind):
    job_type = contract.JOB_TYPE_GENERATION
    late_completion_wins = True

    # 1. Rows and timing

    def lock(self, job_id: str, *, attempt: int | None = None) -> Job | None:
        try:
            pk = uuid.UUID(str(job_id))
        except ValueError:
            return None
        queryset = Generation.objects.select_for_update(of=("self",)).select_related(
            "route", "trend", "owner"
        )
        queryset = queryset.filter(pk=pk)
        if attempt is not None:
            queryset = queryset.filter(attempt=attempt)
        generation = queryset.first()
        return self.job(generation) if generation is not None else None

    @staticmethod
    def job(generation: Generation) -> Job:
        running = generation.status == GenerationStatus.RUNNING
        since = (
            (generation.last_event_at or generation.started_at or generation.queued_at) if running else None
        )
        return Job(
            job_id=str(generation.pk),
            attempt=generation.attempt,
            last_sequence=generation.last_worker_sequence,
            running=running,
            finished=generation.is_terminal
            or generation.status == GenerationStatus.IN_REVIEW
            or generation.deleted_at is not None,
            since=since or generation.queued_at,
            hold_owner=generation,
            row=generation,
        )

    def stuck_after(self) -> dt.timedelta:
        return dt.timedelta(seconds=settings.GENERATIONS_STUCK_AFTER_SECONDS)

    def max_wait(self) -> dt.timedelta:
        return dt.timedelta(seconds=settings.GENERATIONS_QUEUE_MAX_WAIT_SECONDS)

    def candidates(self, *, stuck_before, queued_before):
        silent = Q(status=GenerationStatus.RUNNING) & (
            Q(last_event_at__lt=stuck_before) | Q(last_event_at__isnull=True, queued_at__lt=stuck_before)
        )
        # A generation held for its organization's share waits unsent and does not expire (fair_share.py).
        waiting = Q(status=GenerationStatus.QUEUED, queued_at__lt=queued_before, share_held=False)
        return Generation.objects.filter(silent | waiting, deleted_at__isnull=True)

    def unsent(self, *, queued_before):
        waiting = Q(status=GenerationStatus.QUEUED, queued_at__lt=queued_before, share_held=False)
        return Generation.objects.filter(waiting, job_message_id="", deleted_at__isnull=True)

    # 2. Messages

    def message_fields(self, job_id: str, attempt: int, *, row: Any = None) -> dict[str, Any] | None:
        # A create hands over the row it just committed, its route on it: reading its 100 columns again
        # cost about 14% of the service's CPU. Any other sender (a retry, the reaper, the fair share)
        # reads it again after the commit: a cancel may have come first. That route comes from the
        # process's copy of the routes (routing.routes_by_id), not a JOIN: compiling its 40 columns into
        # the SELECT cost more CPU than the query.
        generation = row if row is not None else Generation.objects.filter(pk=job_id).first()
        if (
            generation is None
            or generation.attempt != attempt
            or generation.status != GenerationStatus.QUEUED
        ):
            return None
        if row is None:
            route = routing.routes_by_id().get(generation.route_id)
            if route is None:  # the route was deleted meanwhile
                raise JobUnavailable(contract.MODEL_UNAVAILABLE)
            generation.route = copy.copy(route)
        return contract.generation_message_fields(
            generation_job(generation),
            lane=generation.lane,
            route_held=dispatch.route_held(generation.route.name),
        )

    def sent(self, job_id: str, attempt: int, message_id: str) -> None:
        Generation.objects.filter(pk=job_id, attempt=attempt).update(job_message_id=message_id)

    # 3. Transitions (the row is locked)

    def seen(self, job: Job, event: contract.JobEvent) -> None:
        generation: Generation = job.row
        generation.last_worker_sequence = event.sequence
        generation.last_event_at = timezone.now()
        if event.is_terminal:
            generation.worker_outcome = "completed" if event.kind == "completed" else event.reason_code or ""
            moderation_audit(generation, event)
        job.last_sequence = event.sequence

    def progress(self, job: Job, event: contract.JobEvent) -> None:
        generation: Generation = job.row
        if generation.status == GenerationStatus.QUEUED:
            generation.status = GenerationStatus.RUNNING
            generation.started_at = generation.started_at or timezone.now()
            generation.seed_used = None  # a new attempt renders with the generation's seed again
        if _is_seed(event.seed):  # a quality-gate retry's new seed: the app sees it while it renders
            generation.seed_used = event.seed
        if event.stage:
            generation.stage = event.stage
        generation.progress = min(max(float(event.progress), 0.0), 1.0)
        generation_changed(generation)

    def outputs_valid(self, job: Job, event: contract.JobEvent) -> bool:
        outputs = event.outputs or {}
        return _valid_output(job.row, outputs.get("video"), "video/mp4") and _valid_output(
            job.row, outputs.get("poster"), "image/jpeg"
        )

    def succeed(self, job: Job, event: contract.JobEvent, *, charged: bool) -> None:
        generation: Generation = job.row
        generation_deliver(generation, outputs=event.outputs or {}, timings=event.timings or {})
        if charged:
            generation.credits_charged = generation.quoted_credits
        generation_changed(generation)
        same_run = (
            event.attempt == generation.attempt
            and (event.outputs or {}).get("route") == generation.route_name
        )
        if same_run and generation.route is not None:  # the route's measured speed, for ETAs
            routing.route_record_timings(
                route_id=generation.route_id,
                timings=generation.timings,
                width=generation.width,
                height=generation.height,
                num_frames=generation.num_frames,
                route=generation.route,
            )
        if generation.trend_id:
            transaction.on_commit(
                functools.partial(count_trend, trend_id=generation.trend_id, succeeded=True)
            )
        generation_finished(generation, "generation.succeeded")

    def review_needed(self, job: Job, event: contract.JobEvent) -> bool:
        return bool((event.moderation or {}).get("output", {}).get("flagged"))

    def hold_for_review(self, job: Job, event: contract.JobEvent) -> None:
        """The flagged output waits for staff (admin: Generation reviews); the user sees IN_REVIEW."""
        generation: Generation = job.row
        verdict = event.moderation["output"]
        generation.status = GenerationStatus.IN_REVIEW
        generation.stage = ""
        generation.progress = 1.0
        generation.credits_charged = 0
        generation_changed(generation)
        GenerationReview.objects.update_or_create(
            generation=generation,
            defaults={
                "outputs": event.outputs or {},
                "timings": event.timings or {},
                "categories": list(verdict.get("categories") or []),
                "scores": dict(verdict.get("scores") or {}),
            },
        )
        # The GPU is done with it: an organization's next held generation may take its place in the lane
        # (its webhook waits for the staff decision: generation_review_approve/reject)
        share_release_on_commit(owner_id=generation.owner_id)

    def retry(self, job: Job, *, code: str, message: str) -> float | None:
        """The same route again after a backoff, then the fallback route; None when neither is left."""
        generation: Generation = job.row
        route = generation.route
        if generation.attempt >= settings.GENERATIONS_MAX_ATTEMPTS or route is None:
            return None
        delay = 0.0
        if generation.route_attempts <= settings.GENERATIONS_RETRIES_PER_ROUTE and route.enabled:
            delay = settings.GENERATIONS_RETRY_BACKOFF_SECONDS * 2 ** (generation.route_attempts - 1)
            generation.route_attempts += 1
        elif not self._move_to_fallback(generation):
            return None
        logger.warning(
            "generation %s attempt %s failed (%s); attempt %s on %s in %.0f s",
            generation.pk,
            generation.attempt,
            code,
            generation.attempt + 1,
            generation.route_name,
            delay,
        )
        self.requeue(generation, at=timezone.now() + dt.timedelta(seconds=delay))
        job.attempt = generation.attempt
        return delay

    def _move_to_fallback(self, generation: Generation) -> bool:
        route = generation.route
        lora = (
            character_lora_base_by_id(character_id=generation.character_id) if generation.lora_key else None
        )
        fallback = routing.route_fallback(
            route, needs_image=bool(generation.image_key), needs_lora=bool(generation.lora_key), lora=lora
        )
        if fallback is None:
            return False
        quality = generation.quality
        width, height, num_frames = routing.job_size(
            fallback,
            aspect_ratio=generation.aspect_ratio,
            duration_seconds=generation.duration_seconds,
            quality=quality,
        )
        if not routing.job_fits(fallback, width=width, height=height, num_frames=num_frames, quality=quality):
            return False
        if fallback.family != route.family:  # the prompt is written per model family
            generation.plan = generation_plan(
                trend=generation.trend,
                prompt=generation.prompt,
                route=fallback,
                subject=generation_subject(
                    lora_key=generation.lora_key,
                    image_key=generation.image_key,
                    character_id=generation.character_id,
                ),
                duration=generation.duration_seconds,
                aspect=generation.aspect_ratio,
            )
        generation.route, generation.route_name = fallback, fallback.name
        generation.width, generation.height, generation.num_frames = width, height, num_frames
        generation.fps = fallback.profile(quality).fps
        generation.route_attempts = 1
        return True

    @staticmethod
    def requeue(generation: Generation, *, at: dt.datetime) -> None:
        """The next attempt, waiting in its lane from `at` (sent by the lifecycle after the commit)."""
        generation.attempt += 1
        generation.status = GenerationStatus.QUEUED
        generation.stage = ""
        generation.progress = 0.0
        generation.queued_at = at
        generation.job_message_id = ""
        generation_changed(generation)

    def end(self, job: Job, *, outcome: Outcome, code: str, message: str, retryable: bool) -> None:
        generation: Generation = job.row
        generation.status = GenerationStatus(outcome.value)
        generation.stage = ""
        generation.failure_code = code
        text = message if message.endswith("not charged.") else message + " You were not charged."
        generation.failure_message = text[:300]
        generation.failure_retryable = retryable
        generation.finished_at = timezone.now()
        generation.credits_charged = 0
        generation_changed(generation)
        generation_finished(generation, f"generation.{outcome.value.lower()}")

    def failure_message(self, code: str, worker_message: str = "") -> str:
        if code == contract.BAD_INPUT and worker_message:
            text = worker_message.strip().rstrip(".")
            return (text[:1].upper() + text[1:] + ".")[:250]
        return FAILURE_MESSAGES.get(code, FAILURE_MESSAGES[contract.INTERNAL])

    def final(self, job: Job, event: contract.JobEvent) -> None:
        """A late event of a finished generation: its outcome is recorded and stray outputs are removed."""
        generation: Generation = job.row
        if event.is_terminal:
            outcome = "completed" if event.kind == "completed" else (event.reason_code or "failed")
            Generation.objects.filter(pk=generation.pk).update(worker_outcome=outcome)
        if event.kind != "completed":
            return
        kept = {generation.video_key, generation.poster_key} - {""}
        review = (
            GenerationReview.objects.filter(generation=generation).values_list("outputs", flat=True).first()
        )
        kept |= {
            o["key"] for o in (review or {}).values() if isinstance(o, dict) and isinstance(o.get("key"), str)
        }
        prefix = generation_prefix(generation)
        stray = [
            output["key"]
            for output in (event.outputs or {}).values()
            if isinstance(output, dict)
            and isinstance(output.get("key"), str)
            and output["key"].startswith(prefix)
            and output["key"] not in kept
        ]
        if stray:
            transaction.on_commit(functools.partial(delete_objects, stray))

    def notify(self, job: Job, *, succeeded: bool) -> None:
        """Records the push of a finished generation (sent after the commit); never fails the transition."""
        generation: Generation = job.row
        title = generation.trend.title if generation.trend_id and generation.trend else ""
        if not title:
            prompt = generation.prompt
            title = (prompt[:40] + "…") if len(prompt) > 40 else (prompt or "Your video")
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


GENERATION_JOBS = register(GenerationJobs())
