"""Metrics and structured logs, end to end in the embedded mode (`make run`: server, Django worker threads
and the tiny-wan GPU lane in one process, LOG_FORMAT=json).

`/metrics` exposes the server's, the backend worker's and the GPU lane's counters, and they move when a
generation runs; one request id, sent with the createGeneration request, is found on the server's, the
backend worker's and the GPU worker's JSON log records of that generation.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.characters import make_photos
from tests.fixtures.live import WSClient
from tests.fixtures.uploads import REQUEST_UPLOADS, send_file
from tests.graphql.generations.helpers import CREATE
from tests.integration.test_make_run import _sign_in_demo, _start

STATUS = "query ($id: ID!) { generation(id: $id) { status } }"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "STORAGE_BACKEND"}
    }
    env.update(LOG_FORMAT="json", GPU_PROGRESS_INTERVAL_S="0.05")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    yield from _start(env, tmp_path_factory.mktemp("var"))


def _gql(
    base: str, token: str, query: str, variables: dict | None = None, headers: dict | None = None
) -> dict:
    response = httpx.post(
        f"{base}/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {token}", **(headers or {})},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def _samples(base: str) -> dict[tuple[str, frozenset], float]:
    response = httpx.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _run_generation(base: str, token: str, request_id: str) -> str:
    """Creates a generation on the tiny route with `request_id` and waits for it; returns its UUID."""
    target = _gql(base, token, REQUEST_UPLOADS, {"count": 1, "contentType": "image/jpeg"})["data"][
        "requestUploads"
    ]["uploads"][0]
    assert send_file(target, make_photos.portrait_jpeg()).status_code == 204
    request = {
        "trendSlug": "rain-dance",
        "photoUploadId": target["uploadId"],
        "idempotencyKey": str(uuid.uuid4()),
    }
    created = _gql(
        base,
        token,
        "mutation CreateGeneration($input: GenerationInput!)"
        + CREATE.split("($input: GenerationInput!)", 1)[1],
        {"input": request},
        headers={"X-Request-ID": request_id},
    )["data"]["createGeneration"]
    assert created["__typename"] == "GenerationPayload", created
    node_id = created["generation"]["id"]
    deadline = time.monotonic() + 180
    status = ""
    while time.monotonic() < deadline:
        status = _gql(base, token, STATUS, {"id": node_id})["data"]["generation"]["status"]
        if status in ("SUCCEEDED", "FAILED", "CANCELED"):
            break
        time.sleep(0.25)
    assert status == "SUCCEEDED"
    return base64.b64decode(node_id).decode().split(":", 1)[1]


@pytest.fixture(scope="module")
def one_generation(embedded):
    """Metrics before and after one generation, its request id and its UUID."""
    base, log, _ = embedded
    token = _sign_in_demo(base)["accessToken"]
    before = _samples(base)
    request_id = f"trace-{uuid.uuid4().hex}"
    generation_id = _run_generation(base, token, request_id)
    time.sleep(0.5)  # the terminal event's own message finishes after the status is visible
    return {"before": before, "after": _samples(base), "request_id": request_id, "id": generation_id}


def test_metrics_move_when_a_job_runs(one_generation):
    before, after = one_generation["before"], one_generation["after"]

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    # GPU worker: the job by route and outcome, its stages and steps
    assert moved("gpu_jobs_total", kind="job", route="tiny-wan", outcome="succeeded") == 1
    assert moved("gpu_stage_seconds_count", route="tiny-wan", stage="denoise") == 1
    assert moved("gpu_stage_seconds_count", route="tiny-wan", stage="total") == 1
    assert moved("gpu_denoising_step_seconds_count", route="tiny-wan") == 1
    assert _value(after, "gpu_model_loads_total", route="tiny-wan") >= 1
    assert ("gpu_queue_depth", frozenset({("queue", "gpu-instant")})) in after
    # Server: the mutation by name and type, timed
    assert moved("graphql_operations_total", operation="CreateGeneration", type="mutation") == 1
    assert moved("graphql_operation_seconds_count", operation="CreateGeneration", type="mutation") == 1
    # Backend worker: the GPU job's events, processed
    assert moved("dramatiq_messages_total", actor="backend_job_event", outcome="done") >= 2


def test_metrics_count_errors_by_code_and_open_websockets(embedded):
    base, _, _ = embedded
    before = _samples(base)
    assert httpx.post(f"{base}/graphql", json={"query": "{ nope }"}, timeout=10).status_code in (200, 400)
    socket = WSClient(f"ws://{base.removeprefix('http://')}/graphql")
    try:
        assert socket.init(_sign_in_demo(base)["accessToken"])["type"] == "connection_ack"
        during = _samples(base)
    finally:
        socket.close()
    assert _value(during, "websocket_connections") >= 1
    assert _value(during, "graphql_errors_total", code="GRAPHQL_VALIDATION_FAILED") == (
        _value(before, "graphql_errors_total", code="GRAPHQL_VALIDATION_FAILED") + 1
    )


def test_one_request_id_follows_the_generation_into_every_worker(embedded, one_generation):
    _, log, _ = embedded
    records = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    ours = [r for r in records if r.get("request_id") == one_generation["request_id"]]
    loggers = {r["logger"] for r in ours}
    # the server sent the job, the GPU lane ran it, the backend worker applied its terminal event
    assert "apps.jobs.dispatch" in loggers, loggers
    assert "gpu_worker.actors" in loggers, loggers
    assert "apps.jobs.tasks" in loggers, loggers
    for record in ours:
        if record["logger"] in ("gpu_worker.actors", "apps.jobs.tasks"):
            assert record["job_id"] == one_generation["id"]
            assert record["operation"] == "CreateGeneration"
            assert record["user_id"]
    worker_lines = [r["message"] for r in ours if r["logger"] == "gpu_worker.actors"]
    assert any(m.endswith("completed") for m in worker_lines), worker_lines
