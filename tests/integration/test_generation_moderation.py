"""Image moderation end to end, in services mode: the GPU lanes in this process classify with a tiny
random-weight ViT (tests/fixtures/moderation.py); thresholds decide the outcome (0 flags everything).

A flagged output is not delivered: the generation waits IN_REVIEW with its hold released; staff approve
(delivered, free, pushed) or reject (erased, failed MODERATION, pushed) it in Django admin. A flagged input
photo fails the job MODERATION before denoising, uncharged. Every decision is audited.
"""

from __future__ import annotations

import httpx
import pytest
from django.urls import reverse

from apps.generations.models import GenerationReview, GenerationStatus, ReviewStatus
from apps.moderation.models import Decision, ModerationDecision, Subject
from apps.notifications.models import PushKind, PushMessage
from apps.storage.backends import get_storage
from tests.fixtures.moderation import CLASSIFIER
from tests.graphql.generations.helpers import (
    DELETE,
    GENERATION,
    a_trend,
    generation_from,
    ledger,
    wait_for,
    wallet,
)
from tests.graphql.generations.stack import LiveUser

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack(asgi_server, django_worker, shipped_routes, settings, gpu_lanes, classifier_root):
    settings.WELCOME_CREDITS = 20
    settings.STORAGE_BACKEND = "local"
    settings.MODERATION_IMAGE_MODEL = CLASSIFIER
    settings.MODERATION_IMAGE_THRESHOLDS = {"nsfw": 0.0}  # every image flags
    gpu_lanes(model_root=classifier_root)
    return asgi_server


def _status(generation_id: str) -> str:
    return generation_from(generation_id).status


def _flagged_output(stack) -> tuple[LiveUser, dict]:
    trend = a_trend(requires="NONE", price_standard=4)
    alice = LiveUser(stack)
    alice.register_device("alice-phone")
    created = alice.create(trendSlug=trend.slug)
    wait_for(lambda: _status(created["id"]) == GenerationStatus.IN_REVIEW, what="the review")
    return alice, created


def _decide(admin_client, generation_id: str, action: str, *, pending: bool = True):
    review = GenerationReview.objects.get(generation=generation_from(generation_id))
    url = reverse("admin:generations_generationreview_changelist")
    listing = admin_client.get(url + "?status__exact=PENDING")  # the queue, with previews
    assert listing.status_code == 200
    assert (str(review.pk) in listing.content.decode()) is pending
    assert ("/storage/download/" in listing.content.decode()) is pending  # the poster's preview
    response = admin_client.post(url, {"action": action, "_selected_action": [str(review.pk)]})
    assert response.status_code == 302
    review.refresh_from_db()
    return review


def test_a_flagged_output_waits_for_review_with_its_hold_released(stack):
    alice, created = _flagged_output(stack)

    seen = alice.gql(GENERATION, {"id": created["id"]})["data"]["generation"]
    assert (seen["status"], seen["video"], seen["poster"], seen["creditsCharged"]) == (
        "IN_REVIEW",
        None,
        None,
        0,
    )
    assert wallet(alice.user) == (20, 0)
    assert ledger(alice.user) == [("grant", 20), ("hold", 4), ("release", 4)]
    review = GenerationReview.objects.get(generation=generation_from(created["id"]))
    assert (review.status, review.categories) == (ReviewStatus.PENDING, ["nsfw"])
    assert get_storage().head(review.outputs["video"]["key"]) is not None  # kept for staff
    audit = ModerationDecision.objects.get(object_ref=str(review.generation_id))
    assert (audit.subject, audit.decision, audit.decided_by) == (Subject.OUTPUT, Decision.FLAGGED, None)
    assert set(audit.scores) == {"normal", "nsfw"}
    assert not PushMessage.objects.filter(user=alice.user).exists()  # nothing to tell yet


def test_approving_a_flagged_output_delivers_it_free_with_the_usual_push(stack, admin_client, admin_user):
    alice, created = _flagged_output(stack)

    review = _decide(admin_client, created["id"], "approve")

    assert (review.status, review.decided_by) == (ReviewStatus.APPROVED, admin_user)
    done = alice.gql(GENERATION, {"id": created["id"]})["data"]["generation"]
    assert (done["status"], done["creditsCharged"]) == ("SUCCEEDED", 0)
    assert httpx.get(done["video"]["url"], timeout=30).status_code == 200
    assert ledger(alice.user) == [("grant", 20), ("hold", 4), ("release", 4)]  # never charged
    push = wait_for(lambda: PushMessage.objects.filter(user=alice.user).first(), what="the push")
    assert push.kind == PushKind.GENERATION_SUCCEEDED
    decisions = ModerationDecision.objects.filter(object_ref=str(review.generation_id)).order_by("created_at")
    assert [(d.decision, d.decided_by) for d in decisions] == [
        (Decision.FLAGGED, None),
        (Decision.APPROVED, admin_user),
    ]
    # Decided once: a second approval changes nothing.
    again = _decide(admin_client, created["id"], "approve", pending=False)
    assert again.decided_at == review.decided_at
    assert ModerationDecision.objects.filter(object_ref=str(review.generation_id)).count() == 2


def test_rejecting_a_flagged_output_erases_it_and_fails_the_generation(stack, admin_client, admin_user):
    alice, created = _flagged_output(stack)
    keys = [o["key"] for o in GenerationReview.objects.get().outputs.values() if isinstance(o, dict)]

    review = _decide(admin_client, created["id"], "reject")

    assert review.status == ReviewStatus.REJECTED and review.outputs == {}
    wait_for(lambda: all(get_storage().head(k) is None for k in keys), what="the output erased")
    failed = alice.gql(GENERATION, {"id": created["id"]})["data"]["generation"]
    assert (failed["status"], failed["failure"]["code"], failed["video"]) == ("FAILED", "MODERATION", None)
    assert wallet(alice.user) == (20, 0)
    push = wait_for(lambda: PushMessage.objects.filter(user=alice.user).first(), what="the push")
    assert push.kind == PushKind.GENERATION_FAILED
    last = ModerationDecision.objects.filter(object_ref=str(review.generation_id)).first()  # newest first
    assert (last.decision, last.decided_by) == (Decision.REJECTED, admin_user)


def test_a_flagged_input_photo_fails_moderation_uncharged(stack):
    trend = a_trend(requires="SELFIE", price_standard=4)
    bob = LiveUser(stack)
    created = bob.create(trendSlug=trend.slug, photoUploadId=bob.upload_selfie())

    wait_for(lambda: _status(created["id"]) == GenerationStatus.FAILED, what="the failure")

    failed = bob.gql(GENERATION, {"id": created["id"]})["data"]["generation"]
    assert (failed["failure"]["code"], failed["failure"]["retryable"], failed["video"]) == (
        "MODERATION",
        False,
        None,
    )
    assert ledger(bob.user) == [("grant", 20), ("hold", 4), ("release", 4)]
    audit = ModerationDecision.objects.get(object_ref=str(generation_from(created["id"]).pk))
    assert (audit.subject, audit.decision, audit.categories) == (
        Subject.INPUT_IMAGE,
        Decision.REFUSED,
        ["nsfw"],
    )
    assert not GenerationReview.objects.exists()


def test_deleting_a_generation_in_review_withdraws_the_review(stack):
    alice, created = _flagged_output(stack)
    deleted = alice.gql(DELETE, {"id": created["id"]})["data"]["deleteGeneration"]
    assert deleted["__typename"] == "DeletePayload"
    review = GenerationReview.objects.get()
    assert (review.status, review.outputs) == (ReviewStatus.WITHDRAWN, {})
    assert ledger(alice.user) == [("grant", 20), ("hold", 4), ("release", 4)]
