"""The GPU workers' events as the job-events actor applies them (gpu_worker.contract JobEvent messages),
the retry and fallback policy, the watchdog, and what is sent to the broker and when.

Nothing here races two writers on one row (row locks hold only on PostgreSQL: the races are in
tests/apps/credits/test_concurrency.py and tests/integration/test_generation_concurrency.py, marked
`services`), so these run on the configured database and broker: the embedded database and the in-process
StubBroker without services, PostgreSQL and Redis in `make test`.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import dramatiq
import pytest
from django.db import transaction
from django.utils import timezone
from dramatiq.brokers.stub import StubBroker

from apps.accounts.models import User
from apps.credits.services import credits_grant
from apps.generations import services
from apps.generations.models import Generation, GenerationStatus, ModelRoute
from apps.jobs.dispatch import cancel_flag_is_set
from apps.jobs.lifecycle import job_dispatch, job_event_apply, job_watchdog, jobs_reap
from apps.storage.backends import get_storage
from gpu_worker import contract
from tests.graphql.generations.helpers import a_trend, ledger, wallet

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker():
    broker = dramatiq.get_broker()
    broker.flush_all()
    yield broker
    broker.flush_all()


def _waiting(broker, queue: str) -> list[dramatiq.Message]:
    """The messages waiting on a queue (`<queue>.DQ`: its delayed ones), oldest first."""
    if isinstance(broker, StubBroker):
        waiting = broker.queues.get(queue)
        return [dramatiq.Message.decode(data) for data in list(waiting.queue)] if waiting else []
    client, namespace = broker.client, broker.namespace
    return [
        dramatiq.Message.decode(client.hget(f"{namespace}:{queue}.msgs", message_id))
        for message_id in client.lrange(f"{namespace}:{queue}", 0, -1)
    ]


@pytest.fixture
def make(shipped_routes, django_capture_on_commit_callbacks, settings):
    settings.GENERATIONS_ROUTE_OVERRIDE = ""  # route by the trend's chain (the embedded mode pins tiny-wan)
    user = User.objects.create_user(f"u{uuid.uuid4().hex[:8]}@example.com", "a-long-test-password-42")
    credits_grant(user=user, amount=50, reason="test")

    def _make(**trend_fields) -> Generation:
        trend = a_trend(requires="NONE", price_standard=4, **trend_fields)
        request = services.GenerationRequest(trend_slug=trend.slug, idempotency_key=str(uuid.uuid4()))
        with django_capture_on_commit_callbacks(execute=True):
            generation = services.generation_create(user=user, request=request)
        return Generation.objects.select_related("route").get(pk=generation.pk)

    _make.user = user
    return _make


_last_sequence = 0


def _sequence() -> int:
    """The next event sequence: microseconds, as a worker's, and never one already used."""
    global _last_sequence
    _last_sequence = max(_last_sequence + 1, time.time_ns() // 1000)
    return _last_sequence


def event(generation: Generation, kind: str, *, attempt: int | None = None, **fields) -> dict:
    return contract.JobEvent(
        job_id=str(generation.pk),
        sequence=_sequence(),
        kind=kind,
        attempt=attempt or Generation.objects.get(pk=generation.pk).attempt,
        **fields,
    ).to_message()


def apply(message: dict, capture) -> str:
    with capture(execute=True):
        return job_event_apply(message=message)


def completed(generation: Generation, **fields) -> dict:
    g = Generation.objects.get(pk=generation.pk)
    prefix = g.output_prefix
    outputs = {
        "video": {
            "key": f"{prefix}/video.mp4",
            "content_type": "video/mp4",
            "bytes": 10,
            "width": g.width,
            "height": g.height,
            "fps": 8,
            "num_frames": g.num_frames,
            "duration_seconds": g.num_frames / 8,
        },
        "poster": {
            "key": f"{prefix}/poster.jpg",
            "content_type": "image/jpeg",
            "bytes": 5,
            "width": 1,
            "height": 1,
        },
        "seed": 99,
        "route": g.route_name,
    }
    timings = {"total": 3.0, "denoise": 2.0, "seconds_per_step": 0.5}
    return event(generation, "completed", progress=1.0, outputs=outputs, timings=timings, **fields)


def test_the_job_is_sent_only_after_the_commit(broker, make):
    generation = make()
    (message,) = _waiting(broker, contract.QUEUE_GPU_INSTANT)
    assert (message.actor_name, message.queue_name) == (contract.ACTOR_RUN_GENERATION, "gpu-instant")
    job = contract.GenerationJob.from_message(message.kwargs["job"])
    assert (job.job_id, job.attempt, job.route.name) == (str(generation.pk), 1, "tiny-wan")
    assert (job.width, job.height, job.num_frames, job.seed) == (48, 80, 41, generation.seed)
    assert job.output_prefix == f"generations/{generation.owner_id}/{generation.pk}/a1"
    assert job.prompt == generation.plan["prompt"]
    assert Generation.objects.get(pk=generation.pk).job_message_id == message.message_id
    # Its watchdog waits on the maintenance queue's delay queue.
    (watchdog,) = _waiting(broker, "maintenance.DQ")
    assert watchdog.args == ("generation", str(generation.pk), 1)

    class Rollback(Exception):
        pass

    broker.flush_all()
    with pytest.raises(Rollback), transaction.atomic():
        services.generation_create(
            user=make.user,
            request=services.GenerationRequest(
                trend_slug=generation.trend_slug, idempotency_key="rolled-back"
            ),
        )
        raise Rollback
    assert _waiting(broker, contract.QUEUE_GPU_INSTANT) == []
    assert not Generation.objects.filter(idempotency_key="rolled-back").exists()


def test_completed_captures_once_and_records_the_route_timing(
    broker, make, django_capture_on_commit_callbacks
):
    generation = make()
    route_before = ModelRoute.objects.get(name="tiny-wan")
    assert (
        apply(event(generation, "stage", stage="LOADING_MODEL"), django_capture_on_commit_callbacks)
        == "applied"
    )
    message = completed(generation)
    assert apply(message, django_capture_on_commit_callbacks) == "applied"
    assert apply(message, django_capture_on_commit_callbacks) == "final"
    assert apply(completed(generation), django_capture_on_commit_callbacks) == "final"  # a second run's
    done = Generation.objects.get(pk=generation.pk)
    assert (done.status, done.credits_charged, done.seed_used, done.worker_outcome) == (
        "SUCCEEDED",
        4,
        99,
        "completed",
    )
    assert ledger(make.user) == [("grant", 50), ("hold", 4), ("capture", 4)]
    route = ModelRoute.objects.get(name="tiny-wan")
    assert route_before.timing_samples == 0 and route.timing_samples == 1
    factor = (48 * 80 * 41) / (64 * 64 * 41)
    assert route.seconds_per_step == pytest.approx(0.5 / factor)
    assert route.overhead_seconds == pytest.approx(1.0)


def test_a_quality_gate_retry_shows_its_new_seed_at_once_and_a_new_attempt_its_own(
    broker, make, settings, django_capture_on_commit_callbacks
):
    settings.GENERATIONS_RETRY_BACKOFF_SECONDS = 0
    generation = make()
    capture = django_capture_on_commit_callbacks
    apply(event(generation, "stage", stage="DENOISING", progress=0.2), capture)
    running = Generation.objects.get(pk=generation.pk)
    assert (running.status, running.seed_used) == ("RUNNING", None)

    # The worker's gate refused the clip: the event announcing the re-render names its seed.
    retry_event = event(
        generation,
        "stage",
        stage="QUALITY_CHECK",
        progress=0.9,
        reason_code=contract.QUALITY_FAILED,
        message="the video is black; retrying with a new seed",
        seed=123456,
    )
    assert apply(retry_event, capture) == "applied"
    retrying = Generation.objects.get(pk=generation.pk)
    assert (retrying.status, retrying.seed_used, retrying.seed) == ("RUNNING", 123456, generation.seed)
    assert retrying.api_sequence > running.api_sequence  # published to the app's subscription

    # A later attempt (the job runs again) renders the generation's own seed: the retry's is gone.
    apply(event(generation, "failed", reason_code=contract.OUT_OF_MEMORY, retryable=True), capture)
    assert Generation.objects.get(pk=generation.pk).attempt == 2
    apply(event(generation, "stage", stage="LOADING_MODEL"), capture)
    assert Generation.objects.get(pk=generation.pk).seed_used is None


def test_a_retryable_failure_is_retried_with_backoff_then_on_the_fallback_then_fails(
    broker, make, settings, django_capture_on_commit_callbacks
):
    settings.GENERATIONS_RETRIES_PER_ROUTE = 1
    settings.GENERATIONS_RETRY_BACKOFF_SECONDS = 30
    generation = make(preferred_model_route="wan2.2-ti2v-5b")
    assert generation.route_name == "wan2.2-ti2v-5b" and (generation.width, generation.height) == (704, 1280)
    broker.flush_all()
    capture = django_capture_on_commit_callbacks

    # 1. Out of memory: the same route again, after the backoff (a delayed message).
    apply(event(generation, "stage", stage="LOADING_MODEL"), capture)
    apply(event(generation, "failed", reason_code=contract.OUT_OF_MEMORY, retryable=True), capture)
    retry = Generation.objects.get(pk=generation.pk)
    assert (retry.status, retry.attempt, retry.route_name, retry.progress) == (
        "QUEUED",
        2,
        "wan2.2-ti2v-5b",
        0.0,
    )
    (delayed,) = _waiting(broker, "gpu-instant.DQ")
    assert delayed.kwargs["job"]["attempt"] == 2
    assert (delayed.kwargs["job"]["tier"], delayed.kwargs["job"]["route"]["steps"]) == ("STANDARD", 50)
    assert 25_000 < delayed.options["eta"] - time.time() * 1000 <= 30_000
    assert wallet(make.user) == (46, 4)  # still held

    # A late progress event of the first attempt changes nothing.
    assert apply(event(generation, "progress", attempt=1, progress=0.5), capture) == "stale"

    # 2. The worker was lost again: the fallback route, planned again for its family and sized for it.
    apply(event(generation, "failed", reason_code=contract.WORKER_LOST, retryable=True), capture)
    fallback = Generation.objects.get(pk=generation.pk)
    assert (fallback.attempt, fallback.route_name, fallback.plan["model_family"]) == (3, "ltx-video", "ltx")
    assert (fallback.width, fallback.height, fallback.num_frames) == (704, 1216, 121)
    job = _waiting(broker, contract.QUEUE_GPU_INSTANT)[-1].kwargs["job"]
    assert (job["attempt"], job["route"]["name"]) == (3, "ltx-video")
    # ... at the same tier, with the fallback's render profile for it
    assert (job["tier"], job["route"]["steps"], job["route"]["fps"], fallback.fps) == ("STANDARD", 8, 24, 24)

    # 3. No fallback left: FAILED, released, retryable.
    apply(event(generation, "failed", reason_code=contract.MODEL_UNAVAILABLE, retryable=True), capture)
    apply(event(generation, "failed", reason_code=contract.MODEL_UNAVAILABLE, retryable=True), capture)
    failed = Generation.objects.get(pk=generation.pk)
    assert (failed.status, failed.failure_code, failed.failure_retryable) == (
        "FAILED",
        "MODEL_UNAVAILABLE",
        True,
    )
    assert failed.attempt == 4
    assert wallet(make.user) == (50, 0)
    assert ledger(make.user) == [("grant", 50), ("hold", 4), ("release", 4)]
    assert cancel_flag_is_set(str(generation.pk))  # anything still queued for it stops


def test_a_non_retryable_failure_fails_at_once_and_releases(broker, make, django_capture_on_commit_callbacks):
    generation = make()
    apply(
        event(generation, "failed", reason_code=contract.MODERATION, message="not allowed"),
        django_capture_on_commit_callbacks,
    )
    failed = Generation.objects.get(pk=generation.pk)
    assert (failed.status, failed.failure_code, failed.attempt) == ("FAILED", "MODERATION", 1)
    assert failed.failure_message == "This request is not allowed by our content rules. You were not charged."
    assert ledger(make.user) == [("grant", 50), ("hold", 4), ("release", 4)]


def test_an_earlier_attempts_late_result_is_accepted_and_stops_the_newer_one(
    broker, make, settings, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    generation = make()
    apply(event(generation, "progress", stage="DENOISING", progress=0.2), capture)
    first_attempt_done = completed(generation)  # the run we give up on below finishes after all
    later = timezone.now() + timedelta(seconds=settings.GENERATIONS_STUCK_AFTER_SECONDS + 1)
    with capture(execute=True):
        job_watchdog(job_type="generation", job_id=str(generation.pk), attempt=1, now=later)
    assert Generation.objects.get(pk=generation.pk).attempt == 2
    assert apply(first_attempt_done, capture) == "applied"
    done = Generation.objects.get(pk=generation.pk)
    assert (done.status, done.video_key) == ("SUCCEEDED", first_attempt_done["outputs"]["video"]["key"])
    assert cancel_flag_is_set(str(generation.pk))
    assert ledger(make.user) == [("grant", 50), ("hold", 4), ("capture", 4)]


def test_a_result_for_a_canceled_generation_is_deleted_and_not_charged(
    broker, make, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    generation = make()
    apply(event(generation, "stage", stage="UPLOADING"), capture)
    with capture(execute=True):
        services.generation_cancel(user=make.user, generation_id=generation.pk)
    message = completed(generation)
    storage = get_storage()
    for output in ("video", "poster"):
        storage.write(message["outputs"][output]["key"], b"x", content_type="application/octet-stream")
    assert apply(message, capture) == "final"
    assert storage.list_keys(f"generations/{generation.owner_id}/") == []
    canceled = Generation.objects.get(pk=generation.pk)
    assert (canceled.status, canceled.worker_outcome, canceled.credits_charged) == (
        "CANCELED",
        "completed",
        0,
    )
    assert ledger(make.user) == [("grant", 50), ("hold", 4), ("release", 4)]


def test_outputs_outside_the_generations_folder_are_refused(broker, make, django_capture_on_commit_callbacks):
    generation = make()
    message = completed(generation)
    message["outputs"]["video"]["key"] = "uploads/someone-else/photo"
    apply(message, django_capture_on_commit_callbacks)
    failed = Generation.objects.get(pk=generation.pk)
    assert (failed.status, failed.failure_code, failed.video_key) == ("FAILED", "INTERNAL", "")
    assert ledger(make.user) == [("grant", 50), ("hold", 4), ("release", 4)]


def test_events_of_unknown_jobs_and_broken_messages(broker, make, django_capture_on_commit_callbacks):
    generation = make()
    message = event(generation, "progress", progress=0.1)
    assert apply({**message, "job_id": str(uuid.uuid4())}, django_capture_on_commit_callbacks) == "gone"
    assert apply({**message, "job_id": "not-a-uuid"}, django_capture_on_commit_callbacks) == "gone"
    with pytest.raises(contract.ContractError):
        job_event_apply(message={**message, "version": 99})


def test_the_watchdog_retries_a_silent_running_job_and_expires_a_stale_queued_one(
    broker, make, settings, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    settings.GENERATIONS_STUCK_AFTER_SECONDS = 60
    settings.GENERATIONS_QUEUE_MAX_WAIT_SECONDS = 600
    running, queued = make(), make()
    apply(event(running, "progress", stage="DENOISING", progress=0.3), capture)
    now = timezone.now()
    # Not yet: both are checked again later.
    assert job_watchdog(job_type="generation", job_id=str(running.pk), attempt=1, now=now) == pytest.approx(
        60, abs=2
    )
    assert job_watchdog(job_type="generation", job_id=str(queued.pk), attempt=1, now=now) == pytest.approx(
        60, abs=2
    )
    with capture(execute=True):
        assert (
            job_watchdog(
                job_type="generation", job_id=str(running.pk), attempt=1, now=now + timedelta(seconds=61)
            )
            is None
        )
    lost = Generation.objects.get(pk=running.pk)
    assert (lost.status, lost.attempt) == ("QUEUED", 2)  # WORKER_LOST is retryable: dispatched again
    with capture(execute=True):
        changed = jobs_reap(now=now + timedelta(seconds=601))
    assert changed >= 1
    expired = Generation.objects.get(pk=queued.pk)
    assert (expired.status, expired.failure_code) == ("FAILED", "EXPIRED")
    assert expired.failure_message == "No video server was free in time. You were not charged."
    assert wallet(make.user) == (46, 4)  # the expired one released; the retried one still held


def test_the_reaper_resends_a_job_that_never_reached_the_broker(
    broker, make, django_capture_on_commit_callbacks
):
    generation = make()
    broker.flush_all()
    Generation.objects.filter(pk=generation.pk).update(
        job_message_id="", queued_at=timezone.now() - timedelta(minutes=5)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs_reap() == 1
    (message,) = _waiting(broker, contract.QUEUE_GPU_INSTANT)
    assert message.kwargs["job"]["job_id"] == str(generation.pk)


def test_the_creates_message_is_the_one_read_back_from_the_database(
    broker, make, django_capture_on_commit_callbacks
):
    """A create builds its job message from the row it wrote (no read after the commit); the reaper's
    resend reads the row: both say the same, to the watermark and the moderation spec."""
    generation = make(moderation_thresholds={"nsfw": 0.2})
    (sent,) = _waiting(broker, contract.QUEUE_GPU_INSTANT)
    broker.flush_all()
    Generation.objects.filter(pk=generation.pk).update(
        job_message_id="", queued_at=timezone.now() - timedelta(minutes=5)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs_reap() == 1
    (resent,) = _waiting(broker, contract.QUEUE_GPU_INSTANT)
    assert resent.message_id != sent.message_id
    assert (resent.actor_name, resent.queue_name) == (sent.actor_name, sent.queue_name)
    assert resent.kwargs == sent.kwargs


def test_a_generation_canceled_before_its_send_is_not_sent_by_a_reader(
    broker, make, django_capture_on_commit_callbacks
):
    """Senders without the row (retries, the reaper, the fair share) read it after the commit: a job
    canceled meanwhile is not sent."""
    generation = make()
    broker.flush_all()
    with django_capture_on_commit_callbacks(execute=True):
        services.generation_cancel(user=make.user, generation_id=generation.pk)
    assert job_dispatch(job_type="generation", job_id=str(generation.pk), attempt=1) is None
    assert _waiting(broker, contract.QUEUE_GPU_INSTANT) == []


def test_staff_cancel_and_free_retry_from_admin(
    broker, make, client, django_user_model, django_capture_on_commit_callbacks
):
    admin = django_user_model.objects.create_superuser("staff@example.com", "a-long-test-password-42")
    client.force_login(admin)
    capture = django_capture_on_commit_callbacks
    queued, failing = make(), make()
    apply(
        event(failing, "failed", reason_code=contract.BAD_INPUT, message="the input image cannot be read"),
        capture,
    )
    url = "/admin/generations/generation/"
    with capture(execute=True):
        response = client.post(url, {"action": "cancel_generations", "_selected_action": [queued.pk]})
    assert response.status_code == 302
    assert Generation.objects.get(pk=queued.pk).status == GenerationStatus.CANCELED
    broker.flush_all()
    with capture(execute=True):
        response = client.post(
            url, {"action": "retry_generations", "_selected_action": [failing.pk, queued.pk]}
        )
    assert response.status_code == 302
    retried = Generation.objects.get(pk=failing.pk)
    assert (retried.status, retried.attempt, retried.failure_code) == ("QUEUED", 2, "")
    assert Generation.objects.get(pk=queued.pk).status == GenerationStatus.CANCELED  # only failed ones
    assert not cancel_flag_is_set(str(failing.pk))
    (message,) = _waiting(broker, contract.QUEUE_GPU_INSTANT)
    assert message.kwargs["job"]["attempt"] == 2
    apply(completed(failing), capture)
    done = Generation.objects.get(pk=failing.pk)
    assert (done.status, done.credits_charged) == ("SUCCEEDED", 0)  # free: its hold was released
    assert wallet(make.user) == (50, 0)


def test_a_job_goes_to_its_routes_queue_while_a_gpu_worker_holds_that_route(broker, make):
    """A worker advertises the routes it holds (gpu_worker/routes_held.py); without one, the plain lane."""
    client = getattr(broker, "client", None)
    if client is None:
        pytest.skip("route advertisements live in the broker's Redis (the embedded StubBroker has none)")
    key = contract.route_held_key("tiny-wan")
    client.set(key, "1", ex=30)
    try:
        held = make()
    finally:
        client.delete(key)
    plain = make()

    (to_route,) = _waiting(broker, "gpu-instant.tiny-wan")
    (to_lane,) = _waiting(broker, contract.QUEUE_GPU_INSTANT)
    assert contract.GenerationJob.from_message(to_route.kwargs["job"]).job_id == str(held.pk)
    assert contract.GenerationJob.from_message(to_lane.kwargs["job"]).job_id == str(plain.pk)
    assert Generation.objects.get(pk=held.pk).job_message_id == to_route.message_id


def test_a_job_goes_to_the_plain_lane_when_redis_cannot_say_which_routes_are_held(monkeypatch):
    from apps.jobs import dispatch

    class Down:
        def exists(self, key):
            raise ConnectionError("down")

    monkeypatch.setattr(dispatch, "_redis_client", lambda: Down())
    assert dispatch.route_held("tiny-wan") is False
