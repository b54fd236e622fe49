"""From a selfie and a trend to a delivered MP4, end to end, in services mode.

A live server (HTTP + websockets), the backend worker threads on Redis (job events, pushes) and the GPU
lanes (gpu_worker.actors, tiny-wan on the CPU) on their own broker in this process; PostgreSQL, Redis,
local storage. Everything goes through GraphQL and a real websocket client.
"""

from __future__ import annotations

import io

import dramatiq
import httpx
import pytest
from PIL import Image

from apps.generations.models import GenerationStatus
from apps.notifications.models import PushKind, PushMessage
from apps.storage.backends import get_storage
from apps.trends.models import Trend
from gpu_worker.contract import ACTOR_JOB_EVENT, QUEUE_JOB_EVENTS, JobEvent
from tests.graphql.generations.helpers import (
    GENERATION,
    a_trend,
    generation_from,
    ledger,
    route_set_steps,
    wait_for,
    wallet,
)
from tests.graphql.generations.stack import (
    LiveUser,
    decode_mp4,
    events_until_complete,
    ffmpeg_stream_line,
    subscribe,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack(asgi_server, django_worker, shipped_routes, settings):
    settings.WELCOME_CREDITS = 20
    settings.STORAGE_BACKEND = "local"
    return asgi_server


def _succeeded(generation_id: str) -> bool:
    return generation_from(generation_id).status == GenerationStatus.SUCCEEDED


def test_a_selfie_and_a_trend_become_a_video_charged_once_with_a_push(stack, gpu_lanes):
    trend = a_trend(requires="SELFIE", price_standard=4, camera_movement="dolly_in")
    alice = LiveUser(stack)
    alice.register_device("alice-phone")
    created = alice.create(trendSlug=trend.slug, photoUploadId=alice.upload_selfie())
    assert (created["status"], created["queuePosition"], created["creditsCharged"]) == ("QUEUED", 1, 0)
    assert wallet(alice.user) == (16, 4)

    socket = alice.socket()
    first = subscribe(socket, "g", created["id"])
    assert first["generation"]["status"] == "QUEUED"
    assert first["generation"]["queuePosition"] == 1 and first["generation"]["etaSeconds"] > 0

    gpu_lanes()  # a GPU comes up and takes the job
    events = events_until_complete(socket, "g")

    # QUEUED, then RUNNING with rising progress through the stages, then SUCCEEDED (and the end).
    sequences = [first["sequence"]] + [e["sequence"] for e in events]
    assert sequences == sorted(set(sequences))
    statuses = [e["generation"]["status"] for e in events]
    assert statuses[-1] == "SUCCEEDED" and set(statuses[:-1]) == {"RUNNING"}
    running = [e["generation"] for e in events[:-1]]
    progress = [g["progress"] for g in running]
    assert progress == sorted(progress) and len(set(progress)) >= 3 and 0 < progress[-1] < 1
    # A subscriber reads the state again on each hint, so changes close together may arrive as one (the
    # quick LOADING_MODEL of tiny-wan, say); the stages it sees are in the pipeline's order.
    order = ["LOADING_MODEL", "DENOISING", "DECODING", "ENCODING", "QUALITY_CHECK", "UPLOADING"]
    stages = [order.index(g["stage"]) for g in running]
    assert stages == sorted(stages) and "DENOISING" in {g["stage"] for g in running}
    assert all(g["etaSeconds"] is not None and g["queuePosition"] is None for g in running)

    done = events[-1]["generation"]
    assert {
        k: done[k] for k in ("status", "stage", "progress", "creditsCharged", "queuePosition", "etaSeconds")
    } == {
        "status": "SUCCEEDED",
        "stage": None,
        "progress": 1.0,
        "creditsCharged": 4,
        "queuePosition": None,
        "etaSeconds": None,
    }
    video, poster = done["video"], done["poster"]
    assert {k: video[k] for k in ("width", "height", "fps", "durationSeconds", "contentType")} == {
        "width": 48,
        "height": 80,
        "fps": 8,
        "durationSeconds": 5.125,
        "contentType": "video/mp4",
    }

    # The MP4 downloads from its expiring URL and decodes to the frames and size promised.
    mp4 = httpx.get(video["url"], timeout=30)
    assert mp4.status_code == 200 and len(mp4.content) == video["bytes"]
    frames = decode_mp4(mp4.content)
    assert frames.shape == (41, 80, 48, 3)
    assert "h264" in ffmpeg_stream_line(mp4.content) and "yuv420p" in ffmpeg_stream_line(mp4.content)
    jpeg = httpx.get(poster["url"], timeout=30)
    assert Image.open(io.BytesIO(jpeg.content)).size == (48, 80) and poster["contentType"] == "image/jpeg"

    # Charged exactly once; the trend counted it; a push was sent to the phone.
    assert wallet(alice.user) == (16, 0)
    assert ledger(alice.user) == [("grant", 20), ("hold", 4), ("capture", 4)]
    trend = Trend.objects.get(pk=trend.pk)
    assert (trend.generations_started, trend.generations_succeeded) == (1, 1)
    push = wait_for(
        lambda: PushMessage.objects.filter(user=alice.user, status="SENT").first(), what="the push"
    )
    assert (push.kind, push.collapse_key) == (
        PushKind.GENERATION_SUCCEEDED,
        f"gen-{generation_from(created['id']).pk}",
    )
    assert push.data["generation_id"] == str(generation_from(created["id"]).pk)

    # A subscriber that comes back later gets the finished state at once, then the end.
    again = alice.socket()
    assert subscribe(again, "h", created["id"])["generation"]["status"] == "SUCCEEDED"
    assert again.next_for("h")["type"] == "complete"


def test_a_redelivered_completed_event_charges_once(stack, gpu_lanes):
    trend = a_trend(requires="NONE", price_standard=4)
    bob = LiveUser(stack)
    created = bob.create(trendSlug=trend.slug)
    gpu_lanes()
    wait_for(lambda: _succeeded(created["id"]), what="the generation to succeed")
    generation = generation_from(created["id"])
    completed = JobEvent(
        job_id=str(generation.pk),
        sequence=generation.last_worker_sequence,
        kind="completed",
        progress=1.0,
        outputs={
            "video": {
                "key": generation.video_key,
                "content_type": "video/mp4",
                "bytes": 1,
                "width": 1,
                "height": 1,
            },
            "poster": {
                "key": generation.poster_key,
                "content_type": "image/jpeg",
                "bytes": 1,
                "width": 1,
                "height": 1,
            },
        },
        attempt=generation.attempt,
    )
    broker = dramatiq.get_broker()
    later = JobEvent(
        **{**completed.to_message(), "sequence": completed.sequence + 10}
    )  # a second run's report
    for event in (completed, completed, later):
        broker.enqueue(
            dramatiq.Message(
                queue_name=QUEUE_JOB_EVENTS,
                actor_name=ACTOR_JOB_EVENT,
                args=(event.to_message(),),
                kwargs={},
                options={},
            )
        )
    broker.join(QUEUE_JOB_EVENTS, timeout=20_000)
    assert ledger(bob.user) == [("grant", 20), ("hold", 4), ("capture", 4)]
    again = generation_from(created["id"])
    assert (again.status, again.credits_charged, again.video_bytes) == (
        GenerationStatus.SUCCEEDED,
        4,
        generation.video_bytes,
    )
    assert get_storage().head(again.video_key) is not None  # the files of the generation were kept


def test_cancel_while_queued_never_runs_and_releases_the_hold(stack, gpu_lanes):
    trend = a_trend(requires="NONE", price_standard=4)
    carol = LiveUser(stack)
    created = carol.create(trendSlug=trend.slug)
    socket = carol.socket()
    subscribe(socket, "g", created["id"])
    canceled = carol.cancel(created["id"])
    assert canceled["__typename"] == "GenerationPayload"
    assert canceled["generation"]["status"] == "CANCELED"
    assert canceled["generation"]["failure"]["code"] == "CANCELED"
    (event,) = events_until_complete(socket, "g")
    assert event["generation"]["status"] == "CANCELED"
    assert wallet(carol.user) == (20, 0)
    assert ledger(carol.user) == [("grant", 20), ("hold", 4), ("release", 4)]

    gpu_lanes()  # the job reaches a GPU, which drops it without running it
    generation = wait_for(
        lambda: (g := generation_from(created["id"])).worker_outcome == "CANCELED" and g, what="the worker"
    )
    assert generation.status == GenerationStatus.CANCELED and generation.started_at is None
    assert get_storage().list_keys(f"generations/{generation.owner_id}/") == []
    # Cancelling again changes nothing.
    assert carol.cancel(created["id"])["generation"]["status"] == "CANCELED"
    assert ledger(carol.user) == [("grant", 20), ("hold", 4), ("release", 4)]


def test_cancel_while_running_stops_the_job_and_releases_the_hold(stack, gpu_lanes, shipped_routes):
    route_set_steps("tiny-wan", 400)  # a long job
    trend = a_trend(requires="NONE", price_standard=4)
    dave = LiveUser(stack)
    created = dave.create(trendSlug=trend.slug)
    socket = dave.socket()
    subscribe(socket, "g", created["id"])
    gpu_lanes()
    canceled = {}

    def cancel_when_denoising(event: dict) -> None:
        generation = event["generation"]
        if not canceled and generation["stage"] == "DENOISING" and generation["progress"] > 0.06:
            canceled.update(dave.cancel(created["id"]))

    events = events_until_complete(socket, "g", on_event=cancel_when_denoising)
    assert canceled["generation"]["status"] == "CANCELED"
    assert events[-1]["generation"]["status"] == "CANCELED"
    generation = wait_for(
        lambda: (g := generation_from(created["id"])).worker_outcome == "CANCELED" and g,
        timeout=30,
        what="the worker to stop",
    )
    assert generation.progress < 0.85  # stopped while denoising
    assert get_storage().list_keys(f"generations/{generation.owner_id}/") == []  # nothing uploaded
    assert wallet(dave.user) == (20, 0)
    assert ledger(dave.user) == [("grant", 20), ("hold", 4), ("release", 4)]


def test_a_failed_job_releases_the_hold_and_tells_the_user(stack, gpu_lanes):
    trend = a_trend(requires="SELFIE", price_standard=4)
    erin = LiveUser(stack)
    erin.register_device("erin-phone")
    created = erin.create(trendSlug=trend.slug, photoUploadId=erin.upload_selfie())
    generation = generation_from(created["id"])
    get_storage().delete(generation.image_key)  # the selfie is gone when the GPU looks for it: bad input
    socket = erin.socket()
    subscribe(socket, "g", created["id"])
    gpu_lanes()
    events = events_until_complete(socket, "g")
    failed = events[-1]["generation"]
    assert failed["status"] == "FAILED"
    assert failed["failure"] == {
        "code": "BAD_INPUT",
        "message": "The input image is missing. You were not charged.",
        "retryable": False,
    }
    assert (failed["creditsCharged"], failed["video"]) == (0, None)
    assert wallet(erin.user) == (20, 0)
    assert ledger(erin.user) == [("grant", 20), ("hold", 4), ("release", 4)]
    push = wait_for(lambda: PushMessage.objects.filter(user=erin.user).first(), what="the push")
    assert push.kind == PushKind.GENERATION_FAILED


def test_generation_query_after_the_fact_shows_the_result(stack, gpu_lanes):
    trend = a_trend(requires="NONE", price_draft=2, price_standard=4)
    frank = LiveUser(stack)
    created = frank.create(trendSlug=trend.slug, aspectRatio="SQUARE_1_1", quality="DRAFT", speed="ECONOMY")
    gpu_lanes()
    wait_for(lambda: _succeeded(created["id"]), what="the generation to succeed")
    generation = frank.gql(GENERATION, {"id": created["id"]})["data"]["generation"]
    assert generation["status"] == "SUCCEEDED"
    # tiny-wan's DRAFT renders 32x32 (STANDARD 64x64): shipped.py's render profiles
    assert (generation["video"]["width"], generation["video"]["height"]) == (32, 32)
    assert (generation["speed"], generation["quality"], generation["creditsCharged"]) == (
        "ECONOMY",
        "DRAFT",
        2,
    )
    assert httpx.get(generation["video"]["url"], timeout=30).status_code == 200
