"""characterUpdated over a real websocket (live uvicorn server), with photo checks on a real worker."""

from __future__ import annotations

import pytest

from tests.fixtures.characters import DELETE, SUBSCRIBE, make_photos

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _subscribe(ws_client, account, op_id: str, character_id: str):
    socket = ws_client()
    assert socket.init(account.token)["type"] == "connection_ack"
    socket.subscribe(op_id, SUBSCRIBE, {"id": character_id})
    return socket


def test_current_state_first_then_every_verdict_then_the_end_on_delete(
    account, ws_client, django_worker, local_storage
):
    me = account()
    character_id = me.character_id()
    socket = _subscribe(ws_client, me, "c", character_id)
    first = socket.next_for("c")["payload"]["data"]["characterUpdated"]
    assert first["character"]["status"] == "COLLECTING"
    assert first["character"]["photos"] == []

    shots = make_photos.distinct_shots()[:3]
    no_face = make_photos.rejected_photos()["no_face"][0]
    assert me.add(character_id, me.uploads([*shots, no_face]))["__typename"] == "CharacterPayload"

    events = []
    while True:
        event = socket.next_for("c", timeout=60)["payload"]["data"]["characterUpdated"]
        events.append(event)
        if all(photo["status"] != "PENDING" for photo in event["character"]["photos"]):
            break
    sequences = [first["sequence"], *[event["sequence"] for event in events]]
    assert sequences == sorted(set(sequences))  # each newer than the last, none repeated
    assert events[0]["character"]["status"] == "VALIDATING"
    assert [photo["status"] for photo in events[0]["character"]["photos"]] == ["PENDING"] * 4
    last = events[-1]["character"]
    assert [(photo["status"], photo["reasons"]) for photo in last["photos"]] == [
        ("ACCEPTED", []),
        ("ACCEPTED", []),
        ("ACCEPTED", []),
        ("REJECTED", ["NO_FACE"]),
    ]
    assert last["status"] == "NEEDS_PHOTOS"
    assert last["acceptedPhotoCount"] == 3

    # Deleting it ends the subscription.
    assert me(DELETE, {"id": character_id})["data"]["deleteCharacter"]["__typename"] == "DeletePayload"
    while True:
        message = socket.next_for("c", timeout=30)
        if message["type"] == "complete":
            break
        assert message["type"] == "next"


def test_another_users_character_is_not_found_and_the_socket_stays_usable(account, ws_client):
    me, other = account(), account()
    theirs = other.character_id()
    mine = me.character_id()
    socket = _subscribe(ws_client, me, "theirs", theirs)
    refused = socket.next_for("theirs")
    assert refused["type"] == "next"
    assert refused["payload"]["data"] is None
    assert [e["extensions"]["code"] for e in refused["payload"]["errors"]] == ["NOT_FOUND"]
    assert socket.next_for("theirs")["type"] == "complete"
    socket.subscribe("mine", SUBSCRIBE, {"id": mine})
    assert socket.next_for("mine")["payload"]["data"]["characterUpdated"]["character"]["id"] == mine
