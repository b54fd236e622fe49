"""Prometheus metrics of a GPU worker (prometheus-client; no Django).

What an operator watches on the GPUs: how many jobs wait in each lane queue, how jobs end per route,
the seconds of each stage and of one denoising step, GPU memory and model loads. `python -m gpu_worker`
serves them on its own port when GPU_METRICS_PORT is set (`start_metrics_server`, off by default); in the
embedded mode they live in the server process and its `/metrics` shows them (backend/metrics.py).

Multiprocess-safe: with PROMETHEUS_MULTIPROC_DIR set, prometheus-client writes every sample to files in
that folder and `exposition_registry` reads all processes' files (the folder must be emptied when the
worker fleet starts, as prometheus-client's documentation says).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gpu_worker.contract import JobEvent

logger = logging.getLogger(__name__)

# Stages are seconds to minutes on real routes (a CPU tiny-wan job: below a second).
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 240, 480, 900)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16)
# The timings of a completed job (gpu_worker/contract.py JobEvent) that are seconds of one stage.
STAGE_TIMINGS = ("load", "denoise", "decode", "encode", "mux", "quality", "upload", "total")

JOBS = Counter(
    "gpu_jobs",
    "GPU jobs finished, by kind (generation, training), route and outcome",
    ["kind", "route", "outcome"],
)
STAGE_SECONDS = Histogram(
    "gpu_stage_seconds", "Seconds of each stage of a completed job", ["route", "stage"], buckets=STAGE_BUCKETS
)
STEP_SECONDS = Histogram(
    "gpu_denoising_step_seconds",
    "Seconds per denoising step of a completed job",
    ["route"],
    buckets=STEP_BUCKETS,
)
MODEL_LOADS = Counter("gpu_model_loads", "Route models loaded into memory", ["route"])
MODEL_LOAD_SECONDS = Histogram("gpu_model_load_seconds", "Seconds to load a route's model", ["route"])
GPU_MEMORY = Gauge(
    "gpu_memory_bytes",
    "CUDA memory after the last job: allocated, reserved and the peak allocated during it",
    ["device", "kind"],
    multiprocess_mode="livemax",
)


class QueueDepthCollector(Collector):
    """Messages waiting in each GPU queue, read from the broker when scraped (one Redis LLEN each)."""

    def __init__(self) -> None:
        self.sources: dict[str, Callable[[str], int]] = {}

    def watch(self, waiting: Callable[[str], int], queues: Iterable[str]) -> None:
        for queue in queues:
            self.sources[queue] = waiting

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "gpu_queue_depth", "Messages waiting in each GPU lane queue", labels=["queue"]
        )
        for queue, waiting in list(self.sources.items()):
            try:
                family.add_metric([queue], waiting(queue))
            except Exception:  # a broker that cannot answer now: leave the sample out rather than fail
                logger.debug("could not read the depth of %s", queue, exc_info=True)
        yield family


QUEUE_DEPTH = QueueDepthCollector()
REGISTRY.register(QUEUE_DEPTH)


def job_finished(kind: str, route: str, event: JobEvent) -> None:
    """Counts one finished job and observes the seconds of its stages and steps."""
    outcome = "succeeded" if event.kind == "completed" else (event.reason_code or "failed").lower()
    JOBS.labels(kind=kind, route=route, outcome=outcome).inc()
    if event.kind == "completed":
        _observe_timings(route, event.timings)
    _observe_gpu_memory()


def job_timed_out(kind: str, route: str) -> None:
    JOBS.labels(kind=kind, route=route, outcome="timed_out").inc()


def model_loaded(route: str, seconds: float) -> None:
    MODEL_LOADS.labels(route=route).inc()
    MODEL_LOAD_SECONDS.labels(route=route).observe(seconds)


def _observe_timings(route: str, timings: Mapping[str, Any]) -> None:
    for stage in STAGE_TIMINGS:
        seconds = timings.get(stage)
        if isinstance(seconds, int | float):
            STAGE_SECONDS.labels(route=route, stage=stage).observe(seconds)
    per_step = timings.get("seconds_per_step")
    if isinstance(per_step, int | float):
        STEP_SECONDS.labels(route=route).observe(per_step)


def _observe_gpu_memory() -> None:
    torch = sys.modules.get("torch")  # loaded by the pipelines; a worker without it has no GPU to report
    if torch is None or not torch.cuda.is_available():
        return
    for index in range(torch.cuda.device_count()):
        device = f"cuda:{index}"
        GPU_MEMORY.labels(device=device, kind="allocated").set(torch.cuda.memory_allocated(index))
        GPU_MEMORY.labels(device=device, kind="reserved").set(torch.cuda.memory_reserved(index))
        GPU_MEMORY.labels(device=device, kind="peak").set(torch.cuda.max_memory_allocated(index))
        torch.cuda.reset_peak_memory_stats(index)


def exposition_registry() -> CollectorRegistry:
    """What this process serves: every process's samples with PROMETHEUS_MULTIPROC_DIR, else its own."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(QUEUE_DEPTH)  # read live from the broker, not from the files
    return registry


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - a scrape port, off by default
    """Serves /metrics on `port` in a thread (prometheus-client's server)."""
    start_http_server(port, addr=addr, registry=exposition_registry())
    logger.info("metrics on %s:%s/metrics", addr, port)
