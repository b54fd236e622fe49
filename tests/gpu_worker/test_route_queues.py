"""Jobs go to a worker that holds their route: route queues (contract), the order a worker serves them
in (before their plain lane, INSTANT's group first), and the Redis keys by which a worker advertises
the routes it holds (gpu_worker/routes_held.py). The backend's side: tests/apps/generations/test_events.py."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from gpu_worker.actors import build_worker
from gpu_worker.contract import (
    LANE_ECONOMY,
    LANE_INSTANT,
    QUEUE_GPU_ECONOMY,
    QUEUE_GPU_INSTANT,
    QUEUE_GPU_TRAINING,
    QUEUE_JOB_EVENTS,
    STAGE_LOADING_MODEL,
    ContractError,
    generation_message_fields,
    gpu_queues_by_priority,
    route_held_key,
    route_queue,
)
from gpu_worker.lanes import LaneGate
from gpu_worker.routes_held import RouteAdvertiser
from gpu_worker.runner import Runner
from tests.fixtures.gpu import make_job, tiny_route

# --- The contract ------------------------------------------------------------------------------------


def test_a_route_queue_is_the_lane_queue_and_the_route_name():
    assert route_queue(QUEUE_GPU_INSTANT, "wan2.2-ti2v-5b") == "gpu-instant.wan2.2-ti2v-5b"
    assert route_held_key("wan2.2-ti2v-5b") == "gpu:route-held:wan2.2-ti2v-5b"
    job = make_job(route=tiny_route(name="tiny_held"))
    assert generation_message_fields(job, lane=LANE_ECONOMY)["queue_name"] == "gpu-economy"
    held = generation_message_fields(job, lane=LANE_ECONOMY, route_held=True)
    assert held["queue_name"] == "gpu-economy.tiny_held"
    assert held["kwargs"] == generation_message_fields(job, lane=LANE_ECONOMY)["kwargs"]


@pytest.mark.parametrize(
    ("lane_queue", "name", "match"),
    [
        (QUEUE_GPU_TRAINING, "tiny-wan", "unknown generation lane queue"),
        (QUEUE_GPU_INSTANT, "Wan", "a route name is lower-case"),
        (QUEUE_GPU_INSTANT, "a b", "a route name is lower-case"),
        (QUEUE_GPU_INSTANT, "", "a route name is lower-case"),
        (QUEUE_GPU_INSTANT, ".DQ", "a route name is lower-case"),
    ],
)
def test_a_bad_route_queue_breaks_the_contract(lane_queue, name, match):
    with pytest.raises(ContractError, match=match):
        route_queue(lane_queue, name)


def test_a_workers_queues_put_its_routes_just_before_each_generation_lane():
    assert gpu_queues_by_priority() == (QUEUE_GPU_INSTANT, QUEUE_GPU_ECONOMY, QUEUE_GPU_TRAINING)
    assert gpu_queues_by_priority(["ltx-video", "tiny-wan", "ltx-video"]) == (
        "gpu-instant.ltx-video",
        "gpu-instant.tiny-wan",
        "gpu-instant",
        "gpu-economy.ltx-video",
        "gpu-economy.tiny-wan",
        "gpu-economy",
        "gpu-training",
    )


# --- The order a worker serves them in (StubBroker) ------------------------------------------------


@pytest.fixture
def stub_broker() -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    broker.declare_queue(QUEUE_JOB_EVENTS)
    yield broker
    broker.close()


def _message(job, lane: str, *, route_held: bool = False) -> dramatiq.Message:
    return dramatiq.Message(**generation_message_fields(job, lane=lane, route_held=route_held))


def test_a_worker_serves_its_routes_queue_before_the_plain_lane(stub_broker, storage, event_log, tmp_path):
    runner = Runner(storage=storage, sink=event_log, model_root=tmp_path, device="cpu", progress_interval=0)
    worker = build_worker(stub_broker, runner, held_routes=["tiny-held"])
    assert worker.consumer_whitelist == set(gpu_queues_by_priority(["tiny-held"]))
    held, other = tiny_route(name="tiny-held", steps=1), tiny_route(steps=1)
    for job_id, route, lane, route_held in [  # in the order they were sent
        ("economy-plain", other, LANE_ECONOMY, False),
        ("economy-held", held, LANE_ECONOMY, True),
        ("instant-plain", other, LANE_INSTANT, False),
        ("instant-held", held, LANE_INSTANT, True),
    ]:
        stub_broker.enqueue(_message(make_job(route=route, job_id=job_id), lane, route_held=route_held))
    worker.start()
    try:
        for queue in gpu_queues_by_priority(["tiny-held"]):
            stub_broker.join(queue, timeout=60_000)
        worker.join()
    finally:
        worker.stop(timeout=10_000)

    started = [e.job_id for e in event_log.events if e.stage == STAGE_LOADING_MODEL]
    assert started == ["instant-held", "instant-plain", "economy-held", "economy-plain"]
    assert [e.job_id for e in event_log.events if e.kind == "completed"] == started


def test_a_training_past_its_wait_passes_economy_but_not_instant_or_its_route_queues(stub_broker):
    queues = gpu_queues_by_priority(["tiny-held"])
    for queue in queues:
        stub_broker.declare_queue(queue)
    gate = LaneGate(stub_broker, queues, slots=1, max_wait_ms={QUEUE_GPU_TRAINING: 1}, first_lanes=2)
    stub_broker.enqueue(
        dramatiq.Message(queue_name=QUEUE_GPU_TRAINING, actor_name="a", args=(), kwargs={}, options={})
    )
    time.sleep(0.01)
    assert gate.order() == (
        "gpu-instant.tiny-held",
        "gpu-instant",
        "gpu-training",
        "gpu-economy.tiny-held",
        "gpu-economy",
    )
    with pytest.raises(ValueError, match="first_lanes"):
        LaneGate(stub_broker, queues, slots=1, first_lanes=0)


# --- Advertising the routes held (Redis) -------------------------------------------------------------


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=2)
    yield client
    client.close()


@pytest.fixture
def route_names(redis_client) -> Iterator[list[str]]:
    """Route names of this test only (the keys are not namespaced), their keys removed after it."""
    names = [f"test-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    yield names
    redis_client.delete(*(route_held_key(name) for name in names))


@pytest.mark.services
def test_a_worker_advertises_a_preloaded_route_while_its_model_is_loaded(
    redis_client, route_names, storage, event_log, tmp_path
):
    held, other, never = route_names
    runner = Runner(storage=storage, sink=event_log, model_root=tmp_path, device="cpu", max_loaded_models=1)
    advertiser = RouteAdvertiser(
        redis_client, [held, never], runner.loaded_route_names, ttl_s=2, refresh_s=0.2
    )
    runner.on_model_loaded = lambda name: advertiser.advertise([name])
    assert advertiser.advertise() == []

    runner.load_model(tiny_route(name=held))  # advertised on load
    assert redis_client.exists(route_held_key(held))
    assert 0 < redis_client.ttl(route_held_key(held)) <= 2
    advertiser.start()
    try:
        time.sleep(2.5)  # past the expiry: refreshed meanwhile
        assert redis_client.exists(route_held_key(held))
        assert not redis_client.exists(route_held_key(never))

        runner.load_model(tiny_route(name=other))  # the held route's model goes (one model at a time)
        assert not redis_client.exists(route_held_key(other))  # not preloaded: its queue is not consumed
        time.sleep(2.5)
        assert not redis_client.exists(route_held_key(held))  # expired: jobs go to the plain lane
    finally:
        advertiser.stop()


def test_a_redis_failure_while_advertising_is_logged_not_raised(caplog):
    class Down:
        def set(self, *args, **kwargs):
            raise redis.ConnectionError("down")

    advertiser = RouteAdvertiser(Down(), ["tiny-wan"], lambda: ["tiny-wan"])
    assert advertiser.advertise() == []
    assert "could not advertise the routes held" in caplog.text
