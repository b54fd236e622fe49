"""The training actor under a real Dramatiq Worker: Redis (services mode, its own key namespace in the
test Redis database) and the StubBroker of the embedded mode. Trainings go in as the backend sends them
(contract.training_message_fields); events are read back from the backend's job-events queue, with the
actor each one is addressed to."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from gpu_worker.actors import broker_sink, build_worker, redis_cancel_checker, start_embedded
from gpu_worker.contract import (
    ACTOR_JOB_EVENT,
    BAD_INPUT,
    CANCELED,
    JOB_TYPE_GENERATION,
    JOB_TYPE_TRAINING,
    LANE_ECONOMY,
    LANE_INSTANT,
    QUEUE_GPU_ECONOMY,
    QUEUE_GPU_INSTANT,
    QUEUE_GPU_TRAINING,
    QUEUE_JOB_EVENTS,
    TIMED_OUT,
    JobEvent,
    cancel_key,
    training_message_fields,
)
from gpu_worker.runner import Runner
from tests.fixtures.gpu import make_job, tiny_route
from tests.gpu_worker.test_actors import _message, lane_state
from tests.gpu_worker.test_training import store_photos, training_job

EXPECTED_ACTOR = {JOB_TYPE_GENERATION: ACTOR_JOB_EVENT, JOB_TYPE_TRAINING: ACTOR_JOB_EVENT}


def _training_message(job, **fields) -> dramatiq.Message:
    return dramatiq.Message(**{**training_message_fields(job), **fields})


def _decode_events(encoded: list[bytes]) -> list[JobEvent]:
    events = []
    for data in encoded:
        message = dramatiq.Message.decode(data)
        event = JobEvent.from_message(message.args[0])
        # Each job type goes to its own backend actor, on the one events queue.
        assert (message.queue_name, message.actor_name) == (QUEUE_JOB_EVENTS, EXPECTED_ACTOR[event.job_type])
        events.append(event)
    return events


# --- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
def redis_broker() -> Iterator[RedisBroker]:
    namespace = f"gpu-train-test-{uuid.uuid4().hex[:10]}"
    broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=namespace)
    broker.emit_after("process_boot")
    yield broker
    for key in broker.client.scan_iter(f"{namespace}*"):
        broker.client.delete(key)
    broker.close()


@pytest.fixture
def gpu_worker(redis_broker, storage, tmp_path) -> Iterator:
    workers: list[dramatiq.Worker] = []

    def _start(**options) -> Runner:
        runner = Runner(
            storage=storage,
            sink=broker_sink(redis_broker),
            cancel_checker=redis_cancel_checker(redis_broker.client),
            model_root=tmp_path / "models",
            device="cpu",
            progress_interval=0.0,
        )
        worker = build_worker(redis_broker, runner, threads=1, **options)
        worker.start()
        workers.append(worker)
        return runner

    yield _start
    for worker in workers:
        worker.stop(timeout=20_000)


def redis_events(broker: RedisBroker) -> list[JobEvent]:
    key = f"{broker.namespace}:{QUEUE_JOB_EVENTS}"
    return _decode_events([broker.client.hget(f"{key}.msgs", i) for i in broker.client.lrange(key, 0, -1)])


def terminal_of(broker, job_id: str) -> list[JobEvent]:
    return [e for e in redis_events(broker) if e.job_id == job_id and e.is_terminal]


def started_order(events: list[JobEvent]) -> list[str]:
    """Job ids in the order their runs began (a generation's first stage, a training's first stage)."""
    order: list[str] = []
    for event in events:
        if event.kind == "stage" and event.job_id not in order:
            order.append(event.job_id)
    return order


@pytest.mark.services
def test_a_training_from_redis_writes_the_lora_and_reports_on_the_events_queue(
    redis_broker, gpu_worker, storage, wait_for
):
    gpu_worker()
    job = training_job(store_photos(storage, 15), job_id=str(uuid.uuid4()), steps=6)

    redis_broker.enqueue(_training_message(job))

    wait_for(lambda: terminal_of(redis_broker, job.job_id), what="the terminal event")
    events = [e for e in redis_events(redis_broker) if e.job_id == job.job_id]
    assert all(e.job_type == JOB_TYPE_TRAINING for e in events)
    assert [e.kind for e in events[-1:]] == ["completed"] and events[0].kind == "stage"
    assert [e.step for e in events if e.kind == "progress"] == [1, 2, 3, 4, 5, 6]
    lora = events[-1].outputs["lora"]
    assert lora["key"] == job.lora_key and (storage.root / job.lora_key).stat().st_size == lora["bytes"]
    wait_for(lambda: lane_state(redis_broker, QUEUE_GPU_TRAINING)["fetched"] == 0, what="the ack")
    assert lane_state(redis_broker, QUEUE_GPU_TRAINING) == {"waiting": 0, "fetched": 0, "dead": 0}


@pytest.mark.services
def test_bad_photos_fail_once_and_are_not_retried(redis_broker, gpu_worker, storage, wait_for):
    gpu_worker()
    keys = store_photos(storage, 12)
    (storage.root / keys[3]).unlink()
    job = training_job(keys, job_id=str(uuid.uuid4()))

    redis_broker.enqueue(_training_message(job, options={"min_backoff": 10, "max_backoff": 20}))

    wait_for(
        lambda: lane_state(redis_broker, QUEUE_GPU_TRAINING)["dead"] == 1, what="the message to be dropped"
    )
    terminal = terminal_of(redis_broker, job.job_id)
    assert [(e.kind, e.reason_code, e.retryable, e.outputs) for e in terminal] == [
        ("failed", BAD_INPUT, False, {"bad_photo_keys": [keys[3]]})
    ]
    [stored] = redis_broker.client.hvals(f"{redis_broker.namespace}:{QUEUE_GPU_TRAINING}.XQ.msgs")
    assert dramatiq.Message.decode(stored).options.get("retries", 0) == 0  # `throws`: no retry


@pytest.mark.services
def test_the_cancel_key_in_redis_stops_a_running_training(redis_broker, gpu_worker, storage, wait_for):
    gpu_worker()
    job = training_job(store_photos(storage, 10), job_id=str(uuid.uuid4()), steps=5000)
    try:
        redis_broker.enqueue(_training_message(job))
        wait_for(
            lambda: any(e.kind == "progress" and e.job_id == job.job_id for e in redis_events(redis_broker)),
            what="training to start",
        )
        redis_broker.client.set(cancel_key(job.job_id), "1", ex=60)  # what deleteCharacter does

        wait_for(lambda: terminal_of(redis_broker, job.job_id), what="the cancel")
        [terminal] = terminal_of(redis_broker, job.job_id)
        assert (terminal.kind, terminal.reason_code, terminal.job_type) == (
            "failed",
            CANCELED,
            JOB_TYPE_TRAINING,
        )
        assert len([e for e in redis_events(redis_broker) if e.kind == "progress"]) < 5000
        assert not (storage.root / job.lora_key).exists()
        wait_for(lambda: lane_state(redis_broker, QUEUE_GPU_TRAINING)["fetched"] == 0, what="the ack")
        assert lane_state(redis_broker, QUEUE_GPU_TRAINING)["dead"] == 0
    finally:
        redis_broker.client.delete(cancel_key(job.job_id))


@pytest.mark.services
def test_a_waiting_training_runs_after_every_waiting_generation(redis_broker, gpu_worker, storage, wait_for):
    quick = tiny_route(steps=1)
    training = training_job(store_photos(storage, 10), job_id="training-0", steps=2)
    redis_broker.enqueue(_training_message(training))  # queued first
    redis_broker.enqueue(_message(make_job(route=quick, job_id="economy-0"), LANE_ECONOMY))
    redis_broker.enqueue(_message(make_job(route=quick, job_id="instant-0"), LANE_INSTANT))

    gpu_worker()

    wait_for(lambda: len([e for e in redis_events(redis_broker) if e.is_terminal]) == 3, what="3 jobs")
    assert started_order(redis_events(redis_broker)) == ["instant-0", "economy-0", "training-0"]
    assert [e.kind for e in redis_events(redis_broker) if e.is_terminal] == ["completed"] * 3


@pytest.mark.services
def test_a_training_waiting_past_its_limit_goes_ahead_of_economy_but_not_instant(
    redis_broker, gpu_worker, storage, wait_for
):
    quick = tiny_route(steps=1)
    for i in range(2):
        redis_broker.enqueue(_message(make_job(route=quick, job_id=f"economy-{i}"), LANE_ECONOMY))
    training = training_job(store_photos(storage, 10), job_id="training-old", steps=2)
    an_hour_ago = int(time.time() * 1000) - 3600_000
    redis_broker.enqueue(_training_message(training, message_timestamp=an_hour_ago))
    redis_broker.enqueue(_message(make_job(route=quick, job_id="instant-0"), LANE_INSTANT))

    gpu_worker(training_max_wait_s=600)

    wait_for(lambda: len([e for e in redis_events(redis_broker) if e.is_terminal]) == 4, what="4 jobs")
    assert started_order(redis_events(redis_broker)) == [
        "instant-0",
        "training-old",
        "economy-0",
        "economy-1",
    ]


# --- StubBroker (embedded mode) -------------------------------------------------------------------


@pytest.fixture
def stub_broker() -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    broker.declare_queue(QUEUE_JOB_EVENTS)
    yield broker
    broker.close()


def stub_events(broker: StubBroker) -> list[JobEvent]:
    return _decode_events(list(broker.queues[QUEUE_JOB_EVENTS].queue))


def test_the_embedded_mode_trains_in_process(stub_broker, storage, tmp_path):
    worker = start_embedded(stub_broker, storage=storage, model_root=tmp_path)
    assert QUEUE_GPU_TRAINING in worker.consumer_whitelist
    try:
        job = training_job(store_photos(storage, 10))
        stub_broker.enqueue(_training_message(job))
        stub_broker.join(QUEUE_GPU_TRAINING, timeout=60_000)
        worker.join()
    finally:
        worker.stop(timeout=10_000)

    events = stub_events(stub_broker)
    assert events[-1].kind == "completed" and events[-1].job_type == JOB_TYPE_TRAINING
    assert (storage.root / job.lora_key).is_file()


def test_a_training_past_its_time_limit_is_reported_timed_out_at_once(stub_broker, storage, tmp_path):
    def stuck(job_id: str) -> bool:
        for _ in range(200):  # Python-level sleeps, so the time limit's async exception lands
            time.sleep(0.02)
        return False

    runner = Runner(
        storage=storage,
        sink=broker_sink(stub_broker),
        cancel_checker=stuck,
        model_root=tmp_path,
        device="cpu",
    )
    # The generation limit stays long: the training actor has its own.
    worker = build_worker(stub_broker, runner, time_limit_s=600, training_time_limit_s=1)
    worker.start()
    try:
        job = training_job(store_photos(storage, 10))
        stub_broker.enqueue(_training_message(job, options={"min_backoff": 10, "max_backoff": 20}))
        stub_broker.join(QUEUE_GPU_TRAINING, timeout=30_000, fail_fast=False)
    finally:
        worker.stop(timeout=10_000)

    assert [(e.kind, e.reason_code, e.retryable, e.job_type) for e in stub_events(stub_broker)] == [
        ("failed", TIMED_OUT, True, JOB_TYPE_TRAINING)
    ]
    [dead] = stub_broker.dead_letters
    assert dead.options.get("retries", 0) == 0  # not run again for as long


def test_a_training_message_that_breaks_the_contract_fails_once_with_bad_input(
    stub_broker, storage, tmp_path
):
    runner = Runner(storage=storage, sink=broker_sink(stub_broker), model_root=tmp_path, device="cpu")
    worker = build_worker(stub_broker, runner)
    worker.start()
    try:
        job = training_job(["characters/c1/crops/0.png"], attempt=3)
        message = _training_message(job)
        message.kwargs["job"]["resolution"] = 33
        stub_broker.enqueue(message)
        stub_broker.join(QUEUE_GPU_TRAINING, timeout=30_000, fail_fast=False)
    finally:
        worker.stop(timeout=10_000)

    [event] = stub_events(stub_broker)
    assert (event.job_id, event.kind, event.reason_code, event.retryable, event.job_type, event.attempt) == (
        "c1",
        "failed",
        BAD_INPUT,
        False,
        JOB_TYPE_TRAINING,
        3,
    )
    assert "resolution must be a multiple of 16" in event.message
    assert len(stub_broker.dead_letters) == 1


def test_the_lanes_are_served_instant_economy_training(stub_broker, storage, tmp_path):
    """The same order on the embedded StubBroker."""
    runner = Runner(storage=storage, sink=broker_sink(stub_broker), model_root=tmp_path, device="cpu")
    quick = tiny_route(steps=1)
    worker = build_worker(stub_broker, runner)
    stub_broker.enqueue(
        _training_message(training_job(store_photos(storage, 10), job_id="training-0", steps=2))
    )
    stub_broker.enqueue(_message(make_job(route=quick, job_id="economy-0"), LANE_ECONOMY))
    stub_broker.enqueue(_message(make_job(route=quick, job_id="instant-0"), LANE_INSTANT))
    worker.start()
    try:
        for queue in (QUEUE_GPU_INSTANT, QUEUE_GPU_ECONOMY, QUEUE_GPU_TRAINING):
            stub_broker.join(queue, timeout=60_000)
        worker.join()
    finally:
        worker.stop(timeout=10_000)

    assert started_order(stub_events(stub_broker)) == ["instant-0", "economy-0", "training-0"]
