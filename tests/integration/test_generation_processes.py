"""The production layout: PostgreSQL, Redis, moto's S3, a backend worker process (`python -m
backend.worker`) and a GPU worker process (`python -m gpu_worker`), with the live server in front.

The selfie goes to S3 with a presigned POST, the GPU worker reads it from S3 and writes the MP4 and the
poster there, the backend worker applies its events, and the app downloads the video from a presigned
URL. A GPU worker killed mid-job has its message redelivered; the generation finishes once, charged once.
"""

from __future__ import annotations

import dramatiq
import httpx
import pytest

from apps.core.queues import DJANGO_QUEUES
from apps.generations.models import GenerationStatus
from gpu_worker.content_credentials import TRAINED_ALGORITHMIC_MEDIA, read_label
from gpu_worker.contract import GPU_QUEUES
from tests.graphql.generations.helpers import (
    a_trend,
    generation_from,
    ledger,
    route_set_steps,
    wait_for,
    wallet,
)
from tests.graphql.generations.stack import (
    C2PA_CHAIN,
    GpuLanes,
    LiveUser,
    backend_worker_process,
    decode_mp4,
    events_until_complete,
    gpu_worker_process,
    subscribe,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def redis_queues():
    broker = dramatiq.get_broker()
    queues = (*DJANGO_QUEUES, *GPU_QUEUES)

    def flush() -> None:
        for queue in queues:
            broker.flush(queue)
        for pattern in ("__acks__.*", "__heartbeats__"):
            for key in broker.client.scan_iter(f"{broker.namespace}:{pattern}"):
                broker.client.delete(key)

    flush()
    yield broker
    flush()


@pytest.fixture
def processes(tmp_path):
    started = []

    def _start(factory, name: str):
        process = factory(tmp_path / f"{name}.log")
        started.append(process)
        return process

    yield _start
    for process in started:
        process.stop()


@pytest.fixture
def s3_stack(asgi_server, s3_bucket, shipped_routes, redis_queues, processes, settings):
    settings.WELCOME_CREDITS = 20
    backend = processes(backend_worker_process, "backend-worker")
    return asgi_server, s3_bucket, backend


def test_selfie_to_video_through_s3_and_separate_worker_processes(s3_stack, processes, tmp_path):
    server, bucket, backend = s3_stack
    trend = a_trend(requires="SELFIE", price_standard=4)
    user = LiveUser(server)
    upload_id = user.upload_selfie()
    created = user.create(trendSlug=trend.slug, photoUploadId=upload_id)
    socket = user.socket()
    assert subscribe(socket, "g", created["id"])["generation"]["status"] == "QUEUED"

    gpu = processes(gpu_worker_process, "gpu-worker")
    events = events_until_complete(socket, "g", timeout=180)
    assert events[-1]["generation"]["status"] == "SUCCEEDED", (gpu.log(), backend.log())
    assert any(e["generation"]["status"] == "RUNNING" for e in events)

    video = events[-1]["generation"]["video"]
    assert video["url"].startswith(f"{bucket.endpoint}/{bucket.name}/generations/")  # a presigned S3 GET
    response = httpx.get(video["url"], timeout=30)
    assert response.status_code == 200
    assert decode_mp4(response.content).shape == (41, 80, 48, 3)
    # The AI label: a C2PA manifest signed by the worker's configured chain, intact after S3
    downloaded = tmp_path / "downloaded.mp4"
    downloaded.write_bytes(response.content)
    label = read_label(downloaded, trust_anchors_pem=C2PA_CHAIN.root_pem)
    assert label is not None and label.validation_state == "Trusted" and label.failures == [], label
    assert [(a["action"], a["digitalSourceType"]) for a in label.actions] == [
        ("c2pa.created", TRAINED_ALGORITHMIC_MEDIA)
    ]
    assert label.claim_generator == "Diffuse"
    assert "tiny-wan" in label.actions[0]["softwareAgent"]["name"]
    generation = generation_from(created["id"])
    assert bucket.get(generation.video_key)[1] == "video/mp4"
    assert bucket.get(generation.poster_key)[1] == "image/jpeg"
    assert ledger(user.user) == [("grant", 20), ("hold", 4), ("capture", 4)]
    assert wallet(user.user) == (16, 0)

    # Deleting it removes every object it had in the bucket, every version included.
    deleted = user.gql(
        "mutation ($id: ID!) { deleteGeneration(id: $id) { __typename } }", {"id": created["id"]}
    )["data"]["deleteGeneration"]
    assert deleted == {"__typename": "DeletePayload"}
    prefix = f"generations/{generation.owner_id}/{generation.pk}/"
    wait_for(lambda: bucket.versions(prefix) == [], what="the video and poster to be deleted")
    assert ledger(user.user) == [("grant", 20), ("hold", 4), ("capture", 4)]  # a delivered video stays paid


def test_a_gpu_worker_killed_mid_job_is_redelivered_and_charged_once(s3_stack, processes):
    server, bucket, backend = s3_stack
    route_set_steps("tiny-wan", 150)  # long enough to be killed while denoising
    trend = a_trend(requires="NONE", price_standard=4)
    user = LiveUser(server)
    created = user.create(trendSlug=trend.slug)

    doomed = processes(gpu_worker_process, "doomed")
    wait_for(
        lambda: generation_from(created["id"]).stage == "DENOISING" or not doomed.alive(),
        timeout=120,
        what="the first GPU worker to start denoising",
    )
    doomed.kill()
    first = generation_from(created["id"])
    assert first.status == GenerationStatus.RUNNING, doomed.log()

    # A survivor whose broker calls a worker dead after 1 s of silence takes the message back.
    survivor = GpuLanes(heartbeat_timeout=1000, maintenance_chance=1_000_000).start()
    try:
        done = wait_for(
            lambda: (g := generation_from(created["id"])).is_terminal and g, timeout=120, what="the rerun"
        )
    finally:
        survivor.stop()
    assert done.status == GenerationStatus.SUCCEEDED, backend.log()
    assert done.attempt == 1  # the same attempt, run twice by Dramatiq: no backend retry was needed
    assert done.last_worker_sequence > first.last_worker_sequence
    assert ledger(user.user) == [("grant", 20), ("hold", 4), ("capture", 4)]
    assert bucket.get(done.video_key)[1] == "video/mp4"
