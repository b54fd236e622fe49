"""The GPU actor under a real Dramatiq Worker: Redis (services mode, its own key namespace in the test
Redis database) and the StubBroker of the embedded mode. Jobs go in as the backend sends them
(contract.generation_message_fields); events are read back from the backend's job-events queue."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from gpu_worker.actors import broker_sink, build_worker, redis_cancel_checker, start_embedded
from gpu_worker.content_credentials import read_label
from gpu_worker.contract import (
    ACTOR_JOB_EVENT,
    BAD_INPUT,
    CANCELED,
    LANE_ECONOMY,
    LANE_INSTANT,
    MODEL_UNAVAILABLE,
    OUT_OF_MEMORY,
    QUEUE_GPU_ECONOMY,
    QUEUE_GPU_INSTANT,
    QUEUE_GPU_TRAINING,
    QUEUE_JOB_EVENTS,
    STAGE_LOADING_MODEL,
    TIMED_OUT,
    JobEvent,
    RouteSpec,
    cancel_key,
    generation_message_fields,
)
from gpu_worker.runner import Runner
from tests.fixtures.gpu import make_job, tiny_route

FAST_RETRY = {"max_retries": 1, "min_backoff": 10, "max_backoff": 20}


def _message(job, lane: str = LANE_INSTANT, **options) -> dramatiq.Message:
    fields = generation_message_fields(job, lane=lane)
    fields["options"] = {**fields["options"], **options}
    return dramatiq.Message(**fields)


# --- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
def redis_broker() -> Iterator[RedisBroker]:
    namespace = f"gpu-test-{uuid.uuid4().hex[:10]}"
    broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=namespace)
    broker.emit_after("process_boot")
    yield broker
    for key in broker.client.scan_iter(f"{namespace}*"):
        broker.client.delete(key)
    broker.close()


@pytest.fixture
def gpu_worker(redis_broker, storage, tmp_path) -> Iterator:
    workers: list[dramatiq.Worker] = []

    def _start(*, cancel_checker=None, time_limit_s: int = 60) -> Runner:
        runner = Runner(
            storage=storage,
            sink=broker_sink(redis_broker),
            cancel_checker=cancel_checker or redis_cancel_checker(redis_broker.client),
            model_root=tmp_path / "models",
            device="cpu",
            progress_interval=0.0,
        )
        worker = build_worker(redis_broker, runner, threads=1, time_limit_s=time_limit_s)
        worker.start()
        workers.append(worker)
        return runner

    yield _start
    for worker in workers:
        worker.stop(timeout=20_000)


def redis_events(broker: RedisBroker) -> list[JobEvent]:
    """Every event message on the backend's queue, in the order the worker sent them."""
    key = f"{broker.namespace}:{QUEUE_JOB_EVENTS}"
    events = []
    for redis_id in broker.client.lrange(key, 0, -1):
        message = dramatiq.Message.decode(broker.client.hget(f"{key}.msgs", redis_id))
        assert (message.actor_name, message.queue_name) == (ACTOR_JOB_EVENT, QUEUE_JOB_EVENTS)
        events.append(JobEvent.from_message(message.args[0]))
    return events


def terminal_of(broker, job_id: str) -> list[JobEvent]:
    return [e for e in redis_events(broker) if e.job_id == job_id and e.is_terminal]


def lane_state(broker: RedisBroker, queue: str) -> dict[str, int]:
    key = f"{broker.namespace}:{queue}"
    fetched = sum(
        broker.client.scard(k) for k in broker.client.scan_iter(f"{broker.namespace}:__acks__.*.{queue}")
    )
    return {
        "waiting": broker.client.llen(key),
        "fetched": fetched,
        "dead": broker.client.hlen(f"{key}.XQ.msgs"),
    }


@pytest.mark.services
def test_the_actor_runs_a_job_from_redis_and_reports_on_the_events_queue(
    redis_broker, gpu_worker, storage, wait_for
):
    gpu_worker()
    job = make_job()

    redis_broker.enqueue(_message(job))

    wait_for(lambda: terminal_of(redis_broker, job.job_id), what="the terminal event")
    events = [e for e in redis_events(redis_broker) if e.job_id == job.job_id]
    assert events[-1].kind == "completed" and events[-1].outputs["video"]["key"] == job.video_key
    assert [e.sequence for e in events] == sorted({e.sequence for e in events})
    assert events[0].stage == STAGE_LOADING_MODEL
    assert (storage.root / job.video_key).stat().st_size == events[-1].outputs["video"]["bytes"]
    wait_for(lambda: lane_state(redis_broker, QUEUE_GPU_INSTANT)["fetched"] == 0, what="the ack")
    assert lane_state(redis_broker, QUEUE_GPU_INSTANT) == {"waiting": 0, "fetched": 0, "dead": 0}


@pytest.mark.services
def test_instant_goes_first_when_both_lanes_have_work(redis_broker, gpu_worker, wait_for):
    quick = tiny_route(steps=1)  # the order is under test, not the pictures
    economy = [make_job(route=quick, job_id=f"economy-{i}") for i in range(2)]
    instant = [make_job(route=quick, job_id=f"instant-{i}") for i in range(2)]
    for job in economy:  # economy was queued first
        redis_broker.enqueue(_message(job, LANE_ECONOMY))
    for job in instant:
        redis_broker.enqueue(_message(job, LANE_INSTANT))

    gpu_worker()

    wait_for(
        lambda: len([e for e in redis_events(redis_broker) if e.kind == "completed"]) == 4, what="4 jobs"
    )
    started = [e.job_id for e in redis_events(redis_broker) if e.stage == STAGE_LOADING_MODEL]
    assert started == ["instant-0", "instant-1", "economy-0", "economy-1"]


@pytest.mark.services
def test_a_busy_gpu_holds_no_other_job_and_takes_instant_next(redis_broker, gpu_worker, wait_for):
    """While a job runs, the next ones stay in Redis (any idle GPU may take them); when it ends, the
    INSTANT job that arrived later runs before the ECONOMY one that was waiting."""
    running, release = threading.Event(), threading.Event()
    first = make_job(job_id="first")

    def slow_for_first(job_id: str) -> bool:
        if job_id == "first" and not release.is_set():
            running.set()
            release.wait(20)
        return False

    gpu_worker(cancel_checker=slow_for_first)
    redis_broker.enqueue(_message(first, LANE_ECONOMY))
    assert running.wait(30)
    quick = tiny_route(steps=1)
    redis_broker.enqueue(_message(make_job(route=quick, job_id="economy-next"), LANE_ECONOMY))
    redis_broker.enqueue(_message(make_job(route=quick, job_id="instant-next"), LANE_INSTANT))
    time.sleep(0.8)  # several poll rounds of both lane consumers

    assert lane_state(redis_broker, QUEUE_GPU_ECONOMY) == {"waiting": 1, "fetched": 1, "dead": 0}
    assert lane_state(redis_broker, QUEUE_GPU_INSTANT) == {"waiting": 1, "fetched": 0, "dead": 0}
    release.set()

    wait_for(
        lambda: len([e for e in redis_events(redis_broker) if e.kind == "completed"]) == 3, what="3 jobs"
    )
    started = [e.job_id for e in redis_events(redis_broker) if e.stage == STAGE_LOADING_MODEL]
    assert started == ["first", "instant-next", "economy-next"]


@pytest.mark.services
def test_a_job_in_its_tail_gives_the_gpu_slot_to_the_next_and_nothing_more_is_fetched(
    redis_broker, storage, tmp_path, wait_for
):
    """Three jobs wait. While the first denoises, the others stay in Redis (any idle GPU may take
    them). While it uploads (its tail), the second denoises and the third still stays in Redis: this
    worker holds a job on its GPU and one in a tail, all it has threads for."""
    from tests.gpu_worker.test_cpu_tail import WAIT_S, BlockingStorage, Gate

    jobs = [make_job(job_id=name) for name in ("first", "second", "third")]
    upload = Gate()
    running = {job.job_id: threading.Event() for job in jobs}
    release = {job.job_id: threading.Event() for job in jobs}

    def hold_at_the_first_step(job_id: str) -> bool:
        if not release[job_id].is_set():
            running[job_id].set()
            release[job_id].wait(WAIT_S)
        return False

    runner = Runner(
        storage=storage,
        sink=broker_sink(redis_broker),
        cancel_checker=hold_at_the_first_step,
        model_root=tmp_path / "models",
        device="cpu",
        progress_interval=0.0,
    )
    runner.storage = runner.lora.storage = BlockingStorage(
        storage.root, jobs[0].video_key, upload, runner.executor.lock
    )
    for job in jobs:
        redis_broker.enqueue(_message(job))
    worker = build_worker(redis_broker, runner, threads=1, tail_threads=1)
    worker.start()
    try:
        assert running["first"].wait(WAIT_S)
        time.sleep(0.8)  # several poll rounds of the lane consumer
        assert lane_state(redis_broker, QUEUE_GPU_INSTANT) == {"waiting": 2, "fetched": 1, "dead": 0}

        release["first"].set()
        assert upload.reached.wait(WAIT_S) and running["second"].wait(WAIT_S)
        time.sleep(0.8)
        assert lane_state(redis_broker, QUEUE_GPU_INSTANT) == {"waiting": 1, "fetched": 2, "dead": 0}

        upload.released.set()
        for event in release.values():
            event.set()
        wait_for(
            lambda: len([e for e in redis_events(redis_broker) if e.kind == "completed"]) == 3,
            what="3 jobs",
        )
    finally:
        upload.released.set()
        for event in release.values():
            event.set()
        worker.stop(timeout=20_000)
    started = [e.job_id for e in redis_events(redis_broker) if e.stage == STAGE_LOADING_MODEL]
    assert started == ["first", "second", "third"]


@pytest.mark.services
def test_a_retryable_failure_is_retried_with_backoff_then_reported_once(redis_broker, gpu_worker, wait_for):
    gpu_worker()
    missing = RouteSpec(
        **{**tiny_route().__dict__, "name": "wan22", "family": "wan22", "checkpoint": "absent"}
    )
    job = make_job(route=missing, width=32, height=32, num_frames=9)

    redis_broker.enqueue(_message(job, **FAST_RETRY))

    wait_for(lambda: lane_state(redis_broker, QUEUE_GPU_INSTANT)["dead"] == 1, what="retries to run out")
    events = [e for e in redis_events(redis_broker) if e.job_id == job.job_id]
    announced = [e for e in events if not e.is_terminal and e.reason_code == MODEL_UNAVAILABLE]
    terminal = [e for e in events if e.is_terminal]
    assert len(announced) == 1 and announced[0].retryable and "retrying" in announced[0].message
    assert [(e.kind, e.reason_code, e.retryable) for e in terminal] == [("failed", MODEL_UNAVAILABLE, True)]
    assert terminal[0].sequence > announced[0].sequence  # the second run numbers above the first
    runs = [e for e in events if e.stage == STAGE_LOADING_MODEL and e.reason_code is None]
    assert len(runs) == 2 and announced[0].sequence < runs[1].sequence  # announced, then run again


@pytest.mark.services
def test_bad_input_fails_once_and_is_not_retried(redis_broker, gpu_worker, wait_for):
    gpu_worker()
    job = make_job(width=40)

    redis_broker.enqueue(_message(job, min_backoff=10, max_backoff=20))

    wait_for(
        lambda: lane_state(redis_broker, QUEUE_GPU_INSTANT)["dead"] == 1, what="the message to be dropped"
    )
    events = [e for e in redis_events(redis_broker) if e.job_id == job.job_id]
    assert [(e.kind, e.reason_code, e.retryable) for e in events] == [("failed", BAD_INPUT, False)]
    key = f"{redis_broker.namespace}:{QUEUE_GPU_INSTANT}.XQ.msgs"
    [stored] = redis_broker.client.hvals(key)
    assert dramatiq.Message.decode(stored).options.get("retries", 0) == 0  # `throws`: no retry


@pytest.mark.services
def test_the_cancel_key_in_redis_stops_a_running_job(redis_broker, gpu_worker, wait_for):
    gpu_worker()
    job = make_job(route=tiny_route(steps=400))
    try:
        redis_broker.enqueue(_message(job))
        wait_for(
            lambda: any(e.kind == "progress" and e.job_id == job.job_id for e in redis_events(redis_broker)),
            what="denoising to start",
        )
        redis_broker.client.set(cancel_key(job.job_id), "1", ex=60)  # what cancelGeneration does

        wait_for(lambda: terminal_of(redis_broker, job.job_id), what="the cancel")
        [terminal] = terminal_of(redis_broker, job.job_id)
        assert (terminal.kind, terminal.reason_code) == ("failed", CANCELED)
        progress = [e for e in redis_events(redis_broker) if e.kind == "progress"]
        assert len(progress) < 400
        wait_for(lambda: lane_state(redis_broker, QUEUE_GPU_INSTANT)["fetched"] == 0, what="the ack")
        assert lane_state(redis_broker, QUEUE_GPU_INSTANT)["dead"] == 0  # a cancel is not a failure to keep
    finally:
        redis_broker.client.delete(cancel_key(job.job_id))


# --- StubBroker (embedded mode) -------------------------------------------------------------------


def stub_events(broker: StubBroker) -> list[JobEvent]:
    return [
        JobEvent.from_message(dramatiq.Message.decode(data).args[0])
        for data in broker.queues[QUEUE_JOB_EVENTS].queue
    ]


@pytest.fixture
def stub_broker() -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    broker.declare_queue(QUEUE_JOB_EVENTS)  # the backend declares its own actor's queue
    yield broker
    broker.close()


def test_the_embedded_mode_runs_the_lanes_in_process_on_a_given_broker(
    stub_broker, storage, tmp_path, monkeypatch
):
    for name in ("C2PA_SIGN_CERT", "C2PA_SIGN_KEY", "C2PA_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    worker = start_embedded(stub_broker, storage=storage, model_root=tmp_path)
    # One thread for the GPU, one for a finished job's CPU tail; the gate fetches one message at a time.
    assert (worker.worker_threads, worker.queue_prefetch) == (2, 2)
    assert worker.consumer_whitelist == {QUEUE_GPU_INSTANT, QUEUE_GPU_ECONOMY, QUEUE_GPU_TRAINING}
    try:
        job = make_job()
        stub_broker.enqueue(_message(job, LANE_ECONOMY))
        stub_broker.join(QUEUE_GPU_ECONOMY, timeout=60_000)
        worker.join()
    finally:
        worker.stop(timeout=10_000)

    events = [e for e in stub_events(stub_broker) if e.job_id == job.job_id]
    assert events[-1].kind == "completed"
    assert (storage.root / job.video_key).is_file()
    # labelled with the development chain made at start-up: intact, trusted by no one
    label = read_label(storage.root / job.video_key)
    assert (label.validation_state, label.failures) == ("Valid", ["signingCredential.untrusted"])
    assert dramatiq.get_broker() is not stub_broker  # declared on the given broker, not the global one


def test_the_next_job_takes_the_gpu_while_the_previous_one_uploads(stub_broker, tmp_path):
    from tests.gpu_worker.test_cpu_tail import WAIT_S, BlockingStorage, Gate

    first, second = make_job(job_id="first"), make_job(job_id="second", seed=8)
    gate, second_done = Gate(), threading.Event()
    send = broker_sink(stub_broker)

    def sink(event: JobEvent) -> None:
        send(event)
        if event.job_id == second.job_id and event.is_terminal:
            second_done.set()

    runner = Runner(storage=None, sink=sink, model_root=tmp_path, device="cpu", progress_interval=0.0)
    runner.storage = runner.lora.storage = BlockingStorage(
        tmp_path / "media", first.video_key, gate, runner.executor.lock
    )
    worker = build_worker(stub_broker, runner)
    worker.start()
    try:
        stub_broker.enqueue(_message(first))
        assert gate.reached.wait(WAIT_S)  # the first job uploads, and stays there
        stub_broker.enqueue(_message(second))
        assert second_done.wait(WAIT_S)  # the second job ran whole meanwhile, on the same lane
        assert terminal_of_stub(stub_broker, first.job_id) == []
        gate.released.set()
        stub_broker.join(QUEUE_GPU_INSTANT, timeout=60_000)
        worker.join()
    finally:
        gate.released.set()
        worker.stop(timeout=10_000)

    terminals = [(e.job_id, e.kind) for e in stub_events(stub_broker) if e.is_terminal]
    assert terminals == [("second", "completed"), ("first", "completed")]
    assert stub_broker.dead_letters == []


def terminal_of_stub(broker: StubBroker, job_id: str) -> list[JobEvent]:
    return [e for e in stub_events(broker) if e.job_id == job_id and e.is_terminal]


def test_a_job_past_the_time_limit_is_reported_timed_out(stub_broker, storage, tmp_path):
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
    worker = build_worker(stub_broker, runner, time_limit_s=1)
    worker.start()
    try:
        job = make_job()
        stub_broker.enqueue(_message(job, max_retries=0))
        stub_broker.join(QUEUE_GPU_INSTANT, timeout=30_000, fail_fast=False)
    finally:
        worker.stop(timeout=10_000)

    assert [(e.kind, e.reason_code, e.retryable) for e in stub_events(stub_broker)] == [
        ("failed", TIMED_OUT, True)
    ]
    assert len(stub_broker.dead_letters) == 1


@pytest.mark.parametrize(
    ("change", "expected"),
    [({"version": 99}, "unsupported job version"), ({"seed": -1}, "seed must be")],
    ids=["newer-version", "negative-seed"],
)
def test_a_message_that_breaks_the_contract_fails_once_with_bad_input(
    stub_broker, storage, tmp_path, change, expected
):
    runner = Runner(storage=storage, sink=broker_sink(stub_broker), model_root=tmp_path, device="cpu")
    worker = build_worker(stub_broker, runner)
    worker.start()
    try:
        job = make_job(attempt=2, output_prefix="generations/g1/a2")  # reported under its own attempt
        message = _message(job)
        message.kwargs["job"].update(change)
        stub_broker.enqueue(message)
        stub_broker.join(QUEUE_GPU_INSTANT, timeout=30_000, fail_fast=False)
    finally:
        worker.stop(timeout=10_000)

    [event] = stub_events(stub_broker)
    assert (event.job_id, event.kind, event.reason_code, event.retryable, event.attempt) == (
        job.job_id,
        "failed",
        BAD_INPUT,
        False,
        2,  # the backend ignores a failure of an earlier attempt: as attempt 1 it would be lost
    )
    assert expected in event.message
    assert len(stub_broker.dead_letters) == 1  # kept for inspection, never retried


def test_out_of_memory_runs_twice_at_most_then_goes_back_to_the_backend(stub_broker, storage, tmp_path):
    """One run, one low-memory run, then a terminal OUT_OF_MEMORY: not three more blind runs of the
    same shape on this worker (the backend's retry and fallback route decide what comes next)."""
    from tests.gpu_worker.test_runner import OutOfMemoryOnDecode, _prime_with

    runner = Runner(storage=storage, sink=broker_sink(stub_broker), model_root=tmp_path, device="cpu")
    _prime_with(runner, lambda model: OutOfMemoryOnDecode(model, 99))
    stub_broker.queues[QUEUE_JOB_EVENTS].queue.clear()  # the priming job's events
    wrapped = runner.models[("tiny-wan", "tiny-wan", "")]
    worker = build_worker(stub_broker, runner)
    worker.start()
    try:
        job = make_job()
        stub_broker.enqueue(_message(job, max_retries=2, min_backoff=10, max_backoff=20))
        stub_broker.join(QUEUE_GPU_INSTANT, timeout=60_000, fail_fast=False)
    finally:
        worker.stop(timeout=10_000)

    assert wrapped.tiling == [False, True]
    terminal = [e for e in stub_events(stub_broker) if e.is_terminal]
    assert [(e.job_id, e.reason_code, e.retryable) for e in terminal] == [(job.job_id, OUT_OF_MEMORY, True)]
    assert "already retried once with less memory" in terminal[0].message
    assert len(stub_broker.dead_letters) == 1


# --- Redis calls from a running job time out --------------------------------------------------------


@pytest.fixture
def blackhole_url() -> Iterator[str]:
    """A Redis URL whose server accepts connections (the kernel does) and never answers."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()


class Failures:
    """Wraps a callable: what each failing call raised. A read of the silent server without a socket
    timeout would hang until pytest-timeout; a TimeoutError here means the timeout ended it."""

    def __init__(self, call) -> None:
        self.call = call
        self.errors: list[type[BaseException]] = []

    def __call__(self, *args):
        try:
            return self.call(*args)
        except BaseException as exc:
            self.errors.append(type(exc))
            raise


def test_a_cancel_flag_read_that_hangs_times_out_and_the_job_goes_on(make_runner, event_log, blackhole_url):
    import redis

    from gpu_worker.actors import redis_signal_client

    checker = Failures(redis_cancel_checker(redis_signal_client(blackhole_url, timeout_s=0.3)))
    runner = make_runner(cancel_checker=checker)

    terminal = runner.run(make_job())

    assert terminal.kind == "completed"
    # One read reached the silent server and gave up after the timeout (no retries); the later checks
    # of this run (one per step) were skipped while the flag store is down.
    [error] = checker.errors
    assert issubclass(error, redis.exceptions.TimeoutError)


def test_events_sent_into_a_partition_time_out_and_only_the_terminal_one_fails_the_run(
    make_runner, blackhole_url
):
    import redis

    from gpu_worker.actors import redis_signal_client

    broker = RedisBroker(client=redis_signal_client(blackhole_url, timeout_s=0.3))
    sink = Failures(broker_sink(broker))
    runner = make_runner(sink=sink)

    with pytest.raises(redis.exceptions.TimeoutError):  # the terminal event must arrive: Dramatiq retries
        runner.run(make_job())

    # The first stage event timed out, the other best-effort events were skipped, the terminal one tried.
    assert sink.errors == [redis.exceptions.TimeoutError] * 2


def test_the_redis_timeout_comes_from_the_settings():
    from gpu_worker.settings import WorkerSettings

    assert WorkerSettings.from_env({}).redis_timeout_s == 2.0
    assert WorkerSettings.from_env({"GPU_REDIS_TIMEOUT_S": "0.5"}).redis_timeout_s == 0.5
