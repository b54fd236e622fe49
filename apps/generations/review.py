"""Staff decisions on outputs that image moderation flagged (GenerationReview, in Django admin).

A flagged output was uploaded but not delivered: the generation is IN_REVIEW and its hold was released
(apps/jobs/lifecycle.py). Approving delivers it as a normal success (free: nothing is held any more) and
pushes "ready"; rejecting erases the output and fails the generation with MODERATION (pushed like any
failure). Each decision is compare-and-set on a pending review with the generation locked, so two staff
members deciding at once decide once, and each is audited (apps/moderation ModerationDecision).
"""

from __future__ import annotations

import functools

from django.db import transaction
from django.utils import timezone

import gpu_worker.contract as contract
from apps.core.errors import ValidationFailed
from apps.jobs.kinds import Outcome
from apps.moderation.models import Decision, Subject
from apps.moderation.services import decision_record

from .events import generation_changed
from .jobs import GENERATION_JOBS, delete_objects, generation_deliver, generation_finished
from .models import GenerationReview, GenerationStatus, ReviewStatus

REJECTED_MESSAGE = "This video did not pass our content guidelines. You were not charged."


def _pending(review_id) -> tuple[GenerationReview, object]:
    review = GenerationReview.objects.select_related("generation").filter(pk=review_id).first()
    job = GENERATION_JOBS.lock(str(review.generation_id)) if review is not None else None
    if review is None or job is None:
        raise ValidationFailed("This review does not exist.", field="review")
    review = GenerationReview.objects.select_for_update().get(pk=review.pk)
    if review.status != ReviewStatus.PENDING or job.row.status != GenerationStatus.IN_REVIEW:
        raise ValidationFailed("This review was already decided.", field="review")
    return review, job


def _close(review: GenerationReview, *, status: str, staff) -> None:
    review.status = status
    review.decided_by = staff
    review.decided_at = timezone.now()
    review.save(update_fields=["status", "decided_by", "decided_at", "updated_at"])


@transaction.atomic
def generation_review_approve(*, review_id, staff) -> GenerationReview:
    """Delivers a flagged output after all (not charged: its hold was released when it was flagged)."""
    review, job = _pending(review_id)
    generation = job.row
    generation_deliver(generation, outputs=review.outputs, timings=review.timings)
    generation.credits_charged = 0
    generation_changed(generation)
    _close(review, status=ReviewStatus.APPROVED, staff=staff)
    decision_record(
        subject=Subject.OUTPUT,
        decision=Decision.APPROVED,
        user=generation.owner,
        decided_by=staff,
        object_ref=str(generation.pk),
        categories=review.categories,
        scores=review.scores,
    )
    GENERATION_JOBS.notify(job, succeeded=True)
    generation_finished(generation, "generation.succeeded")  # an organization's webhook
    return review


@transaction.atomic
def generation_review_reject(*, review_id, staff) -> GenerationReview:
    """Erases a flagged output; the generation fails with MODERATION (its hold is already released)."""
    review, job = _pending(review_id)
    generation = job.row
    keys = [
        o["key"] for o in review.outputs.values() if isinstance(o, dict) and isinstance(o.get("key"), str)
    ]
    GENERATION_JOBS.end(
        job, outcome=Outcome.FAILED, code=contract.MODERATION, message=REJECTED_MESSAGE, retryable=False
    )
    review.outputs = {}
    review.save(update_fields=["outputs", "updated_at"])
    _close(review, status=ReviewStatus.REJECTED, staff=staff)
    decision_record(
        subject=Subject.OUTPUT,
        decision=Decision.REJECTED,
        user=generation.owner,
        decided_by=staff,
        object_ref=str(generation.pk),
        categories=review.categories,
        scores=review.scores,
    )
    transaction.on_commit(functools.partial(delete_objects, keys))
    GENERATION_JOBS.notify(job, succeeded=False)
    return review
