"""The embedded mode (`make run`, no services): SQLite, the in-process broker, the Django worker threads and
the GPU lanes (tiny-wan on the CPU) all inside the one server process. A demo user turns a selfie and a
catalogue trend into an MP4, watched over the websocket, charged once."""

from __future__ import annotations

import json
import os
import uuid

import httpx
import pytest

from tests.fixtures.characters import make_photos
from tests.fixtures.live import WSClient
from tests.fixtures.uploads import REQUEST_UPLOADS, send_file
from tests.graphql.generations.helpers import CREATE, GENERATION
from tests.graphql.generations.stack import decode_mp4, events_until_complete, subscribe
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
