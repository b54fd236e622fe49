"""The embedded mode (`make run`, no services): SQLite, the in-process broker, the Django worker threads and
the GPU lanes (tiny-wan on the CPU) all inside the one server process. A demo user turns a selfie and a
catalogue trend into an MP4, watched over the websocket, charged once."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import uuid
from pathlib import Path

import httpx
import pytest
from strawberry.relay import from_base64

from tests.fixtures.characters import make_photos
from tests.fixtures.live import WSClient
from tests.fixtures.uploads import REQUEST_UPLOADS, send_file
from tests.graphql.generations.helpers import CREATE, GENERATION, wait_for
from tests.graphql.generations.stack import decode_mp4, events_until_complete, subscribe
from tests.integration.test_generation_sound import streams
from tests.integration.test_make_run import DEMO, _sign_in_demo, _start

WALLET = "{ wallet { balance held } }"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "STORAGE_BACKEND"}
    }
    env["GPU_PROGRESS_INTERVAL_S"] = "0.05"
    yield from _start(env, tmp_path_factory.mktemp("var"))


def _gql(base: str, token: str, query: str, variables: dict | None = None) -> dict:
    response = httpx.post(
        f"{base}/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_the_embedded_mode_makes_a_video_from_a_selfie(embedded):
    base, log, _ = embedded
    assert "embedded GPU worker started" in log.read_text()
    token = _sign_in_demo(base)["accessToken"]
    assert _gql(base, token, WALLET)["data"]["wallet"] == {"balance": DEMO["credits"], "held": 0}

    target = _gql(base, token, REQUEST_UPLOADS, {"count": 1, "contentType": "image/jpeg"})["data"][
        "requestUploads"
    ]["uploads"][0]
    assert send_file(target, make_photos.portrait_jpeg()).status_code == 204
    request = {
        "trendSlug": "rain-dance",
        "photoUploadId": target["uploadId"],
        "idempotencyKey": str(uuid.uuid4()),
    }
    created = _gql(base, token, CREATE, {"input": request})["data"]["createGeneration"]
    assert created["__typename"] == "GenerationPayload", json.dumps(created)
    generation = created["generation"]
    price = generation["price"]

    socket = WSClient(f"ws://{base.removeprefix('http://')}/graphql")
    try:
        assert socket.init(token)["type"] == "connection_ack"
        first = subscribe(socket, "g", generation["id"])
        events = [first, *events_until_complete(socket, "g", timeout=180)]
    finally:
        socket.close()
    statuses = [event["generation"]["status"] for event in events]
    assert statuses[-1] == "SUCCEEDED", (statuses, log.read_text()[-3000:])
    sequences = [event["sequence"] for event in events]
    assert sequences == sorted(set(sequences))
    done = _gql(base, token, GENERATION, {"id": generation["id"]})["data"]["generation"]
    assert (done["status"], done["creditsCharged"]) == ("SUCCEEDED", price)
    video = httpx.get(done["video"]["url"], timeout=30)
    assert video.status_code == 200
    frames = decode_mp4(video.content)
    assert frames.shape == (41, 80, 48, 3)  # tiny-wan, 9:16, 5 s at 8 fps
    assert _gql(base, token, WALLET)["data"]["wallet"] == {"balance": DEMO["credits"] - price, "held": 0}
    # Replaying the request returns the same generation; nothing more is charged.
    again = _gql(base, token, CREATE, {"input": request})["data"]["createGeneration"]
    assert again["generation"]["id"] == generation["id"]
    assert _gql(base, token, WALLET)["data"]["wallet"]["balance"] == DEMO["credits"] - price


FINALIZE = """mutation ($id: ID!, $key: String) {
  finalizeGeneration(id: $id, quality: CINEMA, idempotencyKey: $key) {
    __typename ... on GenerationPayload { generation { id } } ... on Error { code message } } }"""
READ = """query ($id: ID!) { generation(id: $id) { status tier seed width height fps frameCount hasSound
  creditsCharged video { url durationSeconds } } }"""


def _finished(base: str, token: str, generation_id: str) -> dict:
    def read() -> dict | None:
        generation = _gql(base, token, READ, {"id": generation_id})["data"]["generation"]
        return generation if generation["status"] in ("SUCCEEDED", "FAILED", "CANCELED") else None

    return wait_for(read, timeout=240, what="the video to finish")


def _stored(env: dict, generation_id: str) -> dict:
    """The generation's row in the embedded server's SQLite database: its timings and shot plan."""
    pk = uuid.UUID(from_base64(generation_id)[1]).hex  # Django keeps UUIDs as 32 hex digits in SQLite
    with contextlib.closing(sqlite3.connect(Path(env["VAR_DIR"]) / "db.sqlite3")) as db:
        timings, plan = db.execute(
            "SELECT timings, plan FROM generations_generation WHERE id = ?", (pk,)
        ).fetchone()
    return {"timings": json.loads(timings), "plan": json.loads(plan)}


def test_the_embedded_mode_finalizes_a_draft_at_cinema_with_the_same_shot_and_sound(embedded):
    """The issue's "done when", as `make run` serves it: a DRAFT, then finalizeGeneration at CINEMA, gives
    two videos with the same seed and plan; the final has more pixels and more steps (a refine pass)
    recorded in its timings, and its MP4 carries the trend's sound as an AAC track of the clip's length."""
    base, log, env = embedded
    token = _sign_in_demo(base)["accessToken"]
    target = _gql(base, token, REQUEST_UPLOADS, {"count": 1, "contentType": "image/jpeg"})["data"][
        "requestUploads"
    ]["uploads"][0]
    assert send_file(target, make_photos.portrait_jpeg()).status_code == 204
    request = {
        "trendSlug": "rain-dance",  # load_trends gave it a synthesized sound
        "photoUploadId": target["uploadId"],
        "quality": "DRAFT",
        "aspectRatio": "SQUARE_1_1",
        "idempotencyKey": str(uuid.uuid4()),
    }
    created = _gql(base, token, CREATE, {"input": request})["data"]["createGeneration"]
    assert created["__typename"] == "GenerationPayload", json.dumps(created)
    draft_id = created["generation"]["id"]
    draft = _finished(base, token, draft_id)
    assert draft["status"] == "SUCCEEDED", log.read_text()[-3000:]

    finalized = _gql(base, token, FINALIZE, {"id": draft_id, "key": str(uuid.uuid4())})["data"]
    assert finalized["finalizeGeneration"]["__typename"] == "GenerationPayload", finalized
    final_id = finalized["finalizeGeneration"]["generation"]["id"]
    final = _finished(base, token, final_id)
    assert final["status"] == "SUCCEEDED", log.read_text()[-3000:]

    assert (draft["tier"], final["tier"]) == ("DRAFT", "CINEMA")
    assert final["seed"] == draft["seed"]
    assert final["width"] * final["height"] > draft["width"] * draft["height"]
    assert final["frameCount"] == draft["frameCount"] and draft["hasSound"] is final["hasSound"] is True
    rows = {"DRAFT": _stored(env, draft_id), "CINEMA": _stored(env, final_id)}
    assert rows["CINEMA"]["plan"] == rows["DRAFT"]["plan"]
    render = {tier: row["timings"]["render"] for tier, row in rows.items()}
    assert render["CINEMA"]["steps"] + render["CINEMA"]["refine_steps"] > render["DRAFT"]["steps"]
    assert render["CINEMA"]["refine_steps"] > 0 and rows["CINEMA"]["timings"]["denoise_refine"] > 0

    data = httpx.get(final["video"]["url"], timeout=30).content
    frames = decode_mp4(data)
    assert (frames.shape[2], frames.shape[1]) == (final["width"], final["height"])
    lines, samples = streams(data)
    assert len(lines) == 2 and "Audio: aac" in lines[1] and "stereo" in lines[1], lines
    assert abs(len(samples) / 48000 - final["video"]["durationSeconds"]) < 0.05
