"""`python -m gpu_worker` as a real process on the test Redis: it takes a job from a lane, reports on
the backend's events queue, writes the files, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker

from gpu_worker.contract import (
    GENERATION_QUEUES_BY_PRIORITY,
    LANE_ECONOMY,
    QUEUE_GPU_ECONOMY,
    QUEUE_JOB_EVENTS,
    ROUTE_HELD_TTL_SECONDS,
    JobEvent,
    generation_message_fields,
    route_held_key,
    route_queue,
)
from tests.fixtures.gpu import make_job, tiny_route

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
QUEUES = (*GENERATION_QUEUES_BY_PRIORITY, route_queue(QUEUE_GPU_ECONOMY, "tiny-wan"), QUEUE_JOB_EVENTS)


@pytest.fixture
def broker():
    broker = RedisBroker(url=os.environ["REDIS_URL"])  # the namespace the backend and the worker share
    for queue in QUEUES:
        broker.flush(queue)
    yield broker
    for queue in QUEUES:
        broker.flush(queue)
        for key in broker.client.scan_iter(f"{broker.namespace}:__acks__.*.{queue}*"):  # a killed worker's
            broker.client.delete(key)
    broker.client.delete(route_held_key("tiny-wan"))  # what a worker preloading tiny-wan advertised
    broker.close()


def _events(broker) -> list[JobEvent]:
    key = f"{broker.namespace}:{QUEUE_JOB_EVENTS}"
    return [
        JobEvent.from_message(dramatiq.Message.decode(broker.client.hget(f"{key}.msgs", redis_id)).args[0])
        for redis_id in broker.client.lrange(key, 0, -1)
    ]


def test_the_worker_process_runs_a_job_and_stops_on_sigterm(broker, tmp_path, wait_for):
    settings = {"GPU_PRELOAD_ROUTES": json.dumps([tiny_route().__dict__]), "GPU_MAX_LOADED_MODELS": "2"}
    process, log_path = _start_process(tmp_path, "worker", extra_env=settings)
    try:
        job = make_job()
        # the preloaded route's queue: the process consumes it, and advertises the route while it holds it
        broker.enqueue(dramatiq.Message(**generation_message_fields(job, lane=LANE_ECONOMY, route_held=True)))

        wait_for(
            lambda: (
                any(e.job_id == job.job_id and e.is_terminal for e in _events(broker))
                or process.poll() is not None
            ),
            timeout=90,
            what="the job to finish",
        )
        assert 0 < broker.client.ttl(route_held_key("tiny-wan")) <= ROUTE_HELD_TTL_SECONDS
        terminal = [e for e in _events(broker) if e.job_id == job.job_id and e.is_terminal]
        assert [e.kind for e in terminal] == ["completed"], log_path.read_text()
        assert (tmp_path / "media" / job.video_key).stat().st_size == terminal[0].outputs["video"]["bytes"]

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    log = log_path.read_text()
    assert "preloaded routes: tiny-wan" in log and "up to 2 loaded" in log
    assert log.index("preloaded routes") < log.index("GPU worker ready")
    lane = f"{broker.namespace}:{route_queue(QUEUE_GPU_ECONOMY, 'tiny-wan')}"
    assert (broker.client.llen(lane), broker.client.hlen(f"{lane}.msgs")) == (0, 0)  # taken and acked


def _start_process(
    tmp_path,
    name: str,
    *,
    argv: tuple[str, ...] = ("-m", "gpu_worker"),
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, Path]:
    env = {
        **os.environ,
        "STORAGE_BACKEND": "local",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "MODEL_ROOT": str(tmp_path / "models"),
        "GPU_DEVICE": "cpu",
        "GPU_PROGRESS_INTERVAL_S": "0",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    log_path = tmp_path / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, *argv], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return process, log_path


def test_a_job_whose_worker_dies_is_redelivered_and_finishes_once(broker, tmp_path, wait_for):
    """SIGKILL mid-denoising: the message stays unacked in Redis; a live worker whose broker sees the
    dead one's heartbeat expire takes it back and runs it; the backend gets one terminal event, and the
    second run's events number above the first's."""
    from gpu_worker.actors import broker_sink, build_worker, redis_cancel_checker
    from gpu_worker.runner import Runner
    from gpu_worker.storage import LocalStorage

    job = make_job(route=tiny_route(steps=150))
    doomed, log_path = _start_process(tmp_path, "doomed")
    try:
        broker.enqueue(dramatiq.Message(**generation_message_fields(job, lane=LANE_ECONOMY)))
        wait_for(
            lambda: any(e.kind == "progress" for e in _events(broker)) or doomed.poll() is not None,
            timeout=90,
            what="the first worker to start denoising",
        )
        doomed.kill()
        doomed.wait(timeout=10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    first_run = _events(broker)
    assert first_run and not any(e.is_terminal for e in first_run), log_path.read_text()

    # The survivor: a broker that calls a worker dead after 1 s of silence and checks on every command.
    survivor_broker = RedisBroker(
        url=os.environ["REDIS_URL"], heartbeat_timeout=1000, maintenance_chance=1_000_000
    )
    survivor_broker.emit_after("process_boot")
    runner = Runner(
        storage=LocalStorage(tmp_path / "media"),
        sink=broker_sink(survivor_broker),
        cancel_checker=redis_cancel_checker(survivor_broker.client),
        model_root=tmp_path / "models",
        device="cpu",
    )
    worker = build_worker(survivor_broker, runner)
    worker.start()
    try:
        wait_for(lambda: any(e.is_terminal for e in _events(broker)), timeout=60, what="the redelivered run")
    finally:
        worker.stop(timeout=20_000)
        survivor_broker.close()

    events = _events(broker)
    terminal = [e for e in events if e.is_terminal]
    assert [e.kind for e in terminal] == ["completed"]
    second_run = events[len(first_run) :]
    assert min(e.sequence for e in second_run) > max(e.sequence for e in first_run)
    assert (tmp_path / "media" / job.video_key).stat().st_size == terminal[0].outputs["video"]["bytes"]


# `python -m gpu_worker` whose generations hit the error a broken CUDA context raises.
FATAL_WORKER = """
import runpy
from gpu_worker.runner import Runner

def _generate(self, run):
    raise RuntimeError("CUDA error: an illegal memory access was encountered")

Runner._generate = _generate
runpy.run_module("gpu_worker", run_name="__main__")
"""


def test_a_fatal_gpu_error_reports_the_job_retryable_and_the_process_exits_non_zero(
    broker, tmp_path, wait_for
):
    from gpu_worker.__main__ import EXIT_GPU_FAULT

    first, second = make_job(), make_job()
    process, log_path = _start_process(tmp_path, "faulty", argv=("-c", FATAL_WORKER))
    try:
        broker.enqueue(dramatiq.Message(**generation_message_fields(first, lane=LANE_ECONOMY)))
        assert process.wait(timeout=90) == EXIT_GPU_FAULT, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    broker.enqueue(dramatiq.Message(**generation_message_fields(second, lane=LANE_ECONOMY)))

    terminal = [e for e in _events(broker) if e.is_terminal]
    assert [(e.job_id, e.kind, e.reason_code, e.retryable) for e in terminal] == [
        (first.job_id, "failed", "INTERNAL", True)
    ]
    assert "exiting after a fatal GPU error" in log_path.read_text()
    lane = f"{broker.namespace}:{QUEUE_GPU_ECONOMY}"
    assert broker.client.llen(lane) == 1  # the next job waits for a healthy worker


def test_a_production_worker_without_c2pa_signing_material_refuses_to_start(tmp_path):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "APP_ENV": "production",
        "REDIS_URL": os.environ["REDIS_URL"],
        "MODEL_ROOT": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "gpu_worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "C2PA_SIGN_CERT and C2PA_SIGN_KEY are required in production" in result.stderr
