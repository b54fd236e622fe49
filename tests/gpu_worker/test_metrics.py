"""A GPU worker's own metrics port (gpu_worker/metrics.py): queue depth per lane queue read from Redis,
and the job, stage, step and model-load series move when a job runs on the tiny route. The job's events
carry the log context its message came with."""

from __future__ import annotations

import dramatiq
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpu_worker.contract import LOG_CONTEXT_OPTION, QUEUE_GPU_INSTANT, QUEUE_JOB_EVENTS
from gpu_worker.metrics import exposition_registry
from tests.fixtures.gpu import make_job
from tests.fixtures.live import free_port
from tests.gpu_worker.test_actors import _message, gpu_worker, redis_broker, terminal_of  # noqa: F401

pytestmark = pytest.mark.services


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def metrics_port():
    from prometheus_client import start_http_server

    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=exposition_registry())
    yield port
    server.shutdown()
    thread.join(timeout=5)


def test_the_gpu_metrics_move_when_a_job_runs(redis_broker, gpu_worker, metrics_port, wait_for):  # noqa: F811
    jobs = ("gpu_jobs_total", frozenset({"kind": "job", "route": "tiny-wan", "outcome": "succeeded"}.items()))
    before = _scrape(metrics_port).get(jobs, 0.0)
    job = make_job()
    redis_broker.enqueue(_message(job, **{LOG_CONTEXT_OPTION: {"request_id": "req-gpu-1"}}))
    gpu_worker()

    wait_for(lambda: terminal_of(redis_broker, job.job_id), what="the terminal event")
    wait_for(lambda: _scrape(metrics_port).get(jobs, 0.0) == before + 1, what="the job counted")
    after = _scrape(metrics_port)

    def value(name: str, **labels: str) -> float:
        return after.get((name, frozenset(labels.items())), 0.0)

    assert value("gpu_stage_seconds_count", route="tiny-wan", stage="denoise") >= 1
    assert value("gpu_stage_seconds_count", route="tiny-wan", stage="upload") >= 1
    assert value("gpu_denoising_step_seconds_count", route="tiny-wan") >= 1
    assert value("gpu_model_loads_total", route="tiny-wan") >= 1
    assert value("gpu_queue_depth", queue=QUEUE_GPU_INSTANT) == 0  # read live from Redis
    # Every event the job sent carries its request id and job id on to the backend.
    key = f"{redis_broker.namespace}:{QUEUE_JOB_EVENTS}"
    contexts = [
        dramatiq.Message.decode(redis_broker.client.hget(f"{key}.msgs", redis_id)).options[LOG_CONTEXT_OPTION]
        for redis_id in redis_broker.client.lrange(key, 0, -1)
    ]
    assert contexts and all(c == {"request_id": "req-gpu-1", "job_id": job.job_id} for c in contexts)


def test_queue_depth_counts_what_waits(redis_broker, gpu_worker, metrics_port):  # noqa: F811
    from gpu_worker.lanes import LaneGate
    from gpu_worker.metrics import QUEUE_DEPTH

    for _ in range(3):
        redis_broker.enqueue(_message(make_job()))
    gate = LaneGate(redis_broker, (QUEUE_GPU_INSTANT,), slots=1)  # not installed: nothing consumes
    QUEUE_DEPTH.watch(gate.waiting, (QUEUE_GPU_INSTANT,))
    assert _scrape(metrics_port)[("gpu_queue_depth", frozenset({("queue", QUEUE_GPU_INSTANT)}))] == 3
