"""generationUpdated over a real websocket on the live server. Worker events are applied as the
job-events actor applies them (the contract's JobEvent messages), without a GPU."""

from __future__ import annotations

import time

import pytest

from apps.core import events as core_events
from apps.generations.events import FEED
from apps.jobs.lifecycle import job_event_apply
from gpu_worker.contract import JobEvent
from tests.graphql.generations.helpers import a_trend, generation_from
from tests.graphql.generations.stack import LiveUser, subscribe

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _event(generation_id: str, kind: str, *, sequence: int | None = None, **fields) -> dict:
    generation = generation_from(generation_id)
    return JobEvent(
        job_id=str(generation.pk),
        sequence=sequence if sequence is not None else time.time_ns() // 1000,
        kind=kind,
        attempt=generation.attempt,
        **fields,
    ).to_message()


@pytest.fixture
def users(asgi_server, shipped_routes, settings):
    settings.WELCOME_CREDITS = 50
    return LiveUser(asgi_server), LiveUser(asgi_server)


def _new(user: LiveUser) -> str:
    trend = a_trend(requires="NONE", price_standard=4)
    return user.create(trendSlug=trend.slug)["id"]


def test_first_the_current_state_then_every_change_then_the_end(users):
    alice, _ = users
    generation_id = _new(alice)
    socket = alice.socket()
    first = subscribe(socket, "g", generation_id)
    assert first["sequence"] == generation_from(generation_id).api_sequence == 1
    assert (first["generation"]["status"], first["generation"]["queuePosition"]) == ("QUEUED", 1)

    assert job_event_apply(message=_event(generation_id, "stage", stage="LOADING_MODEL")) == "applied"
    running = socket.next_for("g")["payload"]["data"]["generationUpdated"]
    assert running["sequence"] == 2
    assert (running["generation"]["status"], running["generation"]["stage"]) == ("RUNNING", "LOADING_MODEL")
    assert running["generation"]["queuePosition"] is None and running["generation"]["etaSeconds"] > 0

    job_event_apply(message=_event(generation_id, "progress", stage="DENOISING", progress=0.5))
    halfway = socket.next_for("g")["payload"]["data"]["generationUpdated"]
    assert (halfway["sequence"], halfway["generation"]["progress"]) == (3, 0.5)

    assert alice.cancel(generation_id)["generation"]["status"] == "CANCELED"
    canceled = socket.next_for("g")["payload"]["data"]["generationUpdated"]
    assert (canceled["sequence"], canceled["generation"]["status"]) == (4, "CANCELED")
    assert socket.next_for("g")["type"] == "complete"


def test_stale_and_repeated_worker_events_change_nothing(users):
    alice, _ = users
    generation_id = _new(alice)
    later = _event(generation_id, "progress", stage="DENOISING", progress=0.6)
    earlier = _event(
        generation_id, "progress", stage="DENOISING", progress=0.3, sequence=later["sequence"] - 5
    )
    assert job_event_apply(message=later) == "applied"
    assert job_event_apply(message=later) == "stale"
    assert job_event_apply(message=earlier) == "stale"
    generation = generation_from(generation_id)
    assert (generation.progress, generation.api_sequence) == (0.6, 2)


def test_a_reconnecting_subscriber_gets_the_right_state_at_once(users):
    alice, _ = users
    generation_id = _new(alice)
    socket = alice.socket()
    subscribe(socket, "g", generation_id)
    socket.close()
    # Changes while away (their messages reach nobody, as after a dropped channel-layer message).
    job_event_apply(message=_event(generation_id, "stage", stage="LOADING_MODEL"))
    job_event_apply(message=_event(generation_id, "progress", stage="DENOISING", progress=0.42))
    back = alice.socket()
    state = subscribe(back, "g", generation_id)
    assert state["sequence"] == 3
    assert (state["generation"]["status"], state["generation"]["stage"], state["generation"]["progress"]) == (
        "RUNNING",
        "DENOISING",
        0.42,
    )


def test_an_older_message_than_the_snapshot_is_not_delivered(users):
    alice, _ = users
    generation_id = _new(alice)
    socket = alice.socket()
    subscribe(socket, "g", generation_id)
    pk = generation_from(generation_id).pk
    # A reordered hint from before the snapshot: dropped.
    core_events.publish(FEED.group(pk), {"kind": "generation", "id": str(pk), "sequence": 1, "state": {}})
    job_event_apply(message=_event(generation_id, "progress", stage="DENOISING", progress=0.2))
    update = socket.next_for("g")["payload"]["data"]["generationUpdated"]
    assert (update["sequence"], update["generation"]["progress"]) == (2, 0.2)


def test_another_users_generation_is_an_operation_error_and_the_socket_stays_usable(users):
    alice, bob = users
    alices = _new(alice)
    bobs = _new(bob)
    socket = bob.socket()
    socket.subscribe(
        "theirs", "subscription ($id: ID!) { generationUpdated(id: $id) { sequence } }", {"id": alices}
    )
    refused = socket.next_for("theirs")
    assert refused["type"] == "next"
    assert refused["payload"]["data"] is None
    assert [e["extensions"]["code"] for e in refused["payload"]["errors"]] == ["NOT_FOUND"]
    assert socket.next_for("theirs")["type"] == "complete"
    # The same socket keeps working.
    assert subscribe(socket, "mine", bobs)["generation"]["status"] == "QUEUED"


def test_two_subscriptions_on_one_socket_keep_receiving_after_one_ends(users):
    alice, _ = users
    first, second = _new(alice), _new(alice)
    socket = alice.socket()
    subscribe(socket, "a", first)
    subscribe(socket, "b", second)
    alice.cancel(first)
    assert socket.next_for("a")["payload"]["data"]["generationUpdated"]["generation"]["status"] == "CANCELED"
    assert socket.next_for("a")["type"] == "complete"
    job_event_apply(message=_event(second, "stage", stage="LOADING_MODEL"))
    update = socket.next_for("b")["payload"]["data"]["generationUpdated"]
    assert update["generation"]["status"] == "RUNNING"


def test_a_finished_generation_gives_its_state_and_ends(users):
    alice, _ = users
    generation_id = _new(alice)
    alice.cancel(generation_id)
    socket = alice.socket()
    assert subscribe(socket, "g", generation_id)["generation"]["status"] == "CANCELED"
    assert socket.next_for("g")["type"] == "complete"
