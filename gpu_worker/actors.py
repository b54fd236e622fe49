"""The Dramatiq side of a GPU worker: the generation actor on the GPU lanes, and the worker around it.

Two ways to start it, one code path:

- `python -m gpu_worker` (gpu_worker/__main__.py): its own process with a RedisBroker, real routes on
  CUDA, cancel flags read from Redis;
- `start_embedded(broker, storage=...)`: inside another process on the broker it is given (the backend's
  embedded mode, a StubBroker), running the tiny-wan route on the CPU.

Events go back as messages of actor ACTOR_JOB_EVENT on QUEUE_JOB_EVENTS through `broker.enqueue`, so this
module needs no backend import. The actor is declared on the broker it is given, never on the global one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded

from gpu_worker import pipelines
from gpu_worker.contract import (
    ACTOR_JOB_EVENT,
    ACTOR_RUN_GENERATION,
    BAD_INPUT,
    CANCELED,
    FAMILY_TINY_WAN,
    GENERATION_QUEUES_BY_PRIORITY,
    QUEUE_GPU_INSTANT,
    QUEUE_JOB_EVENTS,
    TIMED_OUT,
    ContractError,
    GenerationJob,
    JobEvent,
    cancel_key,
)
from gpu_worker.lanes import LaneGate
from gpu_worker.runner import CancelChecker, EventSink, Runner
from gpu_worker.settings import DEFAULT_TIME_LIMIT_S, WorkerSettings
from gpu_worker.storage import Storage

logger = logging.getLogger(__name__)

# Retries of a retryable failure (out of memory, a lost model, an internal error) inside one backend
# attempt; after them the worker reports the failure as terminal and the backend may try the fallback.
MAX_RETRIES = 2
MIN_BACKOFF_MS = 10_000
MAX_BACKOFF_MS = 120_000


class JobFailed(Exception):
    """A job failed for good: its terminal event is sent. In the actor's `throws`: never retried."""


class RetryableJobFailure(Exception):
    """A retryable failure with retries left: Dramatiq's Retries middleware runs the job again."""


def broker_sink(broker: dramatiq.Broker) -> EventSink:
    """Sends events as messages of the backend's ACTOR_JOB_EVENT on QUEUE_JOB_EVENTS."""
    broker.declare_queue(QUEUE_JOB_EVENTS)

    def send(event: JobEvent) -> None:
        broker.enqueue(
            dramatiq.Message(
                queue_name=QUEUE_JOB_EVENTS,
                actor_name=ACTOR_JOB_EVENT,
                args=(event.to_message(),),
                kwargs={},
                options={},
            )
        )

    return send


def redis_cancel_checker(client: Any) -> CancelChecker:
    """Reads the cancel flag the backend sets (contract.cancel_key) in Redis."""

    def canceled(job_id: str) -> bool:
        return bool(client.exists(cancel_key(job_id)))

    return canceled


def declare_generation_actor(
    broker: dramatiq.Broker, runner: Runner, *, time_limit_s: int = DEFAULT_TIME_LIMIT_S
) -> dramatiq.Actor:
    """Declares ACTOR_RUN_GENERATION on `broker` (both generation lanes) and returns it."""
    if not any(isinstance(m, CurrentMessage) for m in broker.middleware):
        broker.add_middleware(CurrentMessage())

    def run_generation(job: dict[str, Any] | None = None) -> None:
        message = CurrentMessage.get_current_message()
        options = message.options if message is not None else {}
        retries = options.get("retries", 0)
        final_attempt = retries >= options.get("max_retries", MAX_RETRIES)

        # 1. Read the job; a message that breaks the contract fails at once (and says so when it can)
        try:
            parsed = GenerationJob.from_message(job)
        except ContractError as exc:
            job_id = job.get("job_id") if isinstance(job, dict) else None
            if isinstance(job_id, str) and job_id:
                runner.report_failure(job_id, BAD_INPUT, f"the job message is malformed: {exc}")
            raise JobFailed(f"malformed job message: {exc}") from None

        # 2. Run it; a time limit is retried like any retryable failure, then reported
        try:
            event = runner.run(parsed, final_attempt=final_attempt)
        except TimeLimitExceeded:
            if not final_attempt:
                raise
            runner.report_failure(parsed.job_id, TIMED_OUT, "the job took too long", attempt=parsed.attempt)
            raise JobFailed(f"job {parsed.job_id} ran past the time limit") from None

        # 3. Tell Dramatiq: done, retry, or failed for good (the terminal event is already sent)
        if event.kind == "completed" or event.reason_code == CANCELED:
            return
        if event.retryable and not final_attempt:
            raise RetryableJobFailure(f"job {parsed.job_id}: {event.reason_code}")
        raise JobFailed(f"job {parsed.job_id}: {event.reason_code}: {event.message}")

    for queue in GENERATION_QUEUES_BY_PRIORITY:
        broker.declare_queue(queue)
    return dramatiq.actor(
        run_generation,
        actor_name=ACTOR_RUN_GENERATION,
        queue_name=QUEUE_GPU_INSTANT,  # the actor serves both lanes: messages name their own queue
        broker=broker,
        max_retries=MAX_RETRIES,
        min_backoff=MIN_BACKOFF_MS,
        max_backoff=MAX_BACKOFF_MS,
        time_limit=time_limit_s * 1000,
        throws=(JobFailed,),
    )


def build_worker(
    broker: dramatiq.Broker,
    runner: Runner,
    *,
    threads: int = 1,
    time_limit_s: int = DEFAULT_TIME_LIMIT_S,
    worker_timeout_ms: int = 250,
) -> dramatiq.Worker:
    """A Worker on the generation lanes: INSTANT before ECONOMY, nothing prefetched while busy
    (gpu_worker/lanes.py), prefetch equal to the thread count (one thread per GPU)."""
    declare_generation_actor(broker, runner, time_limit_s=time_limit_s)
    LaneGate(broker, GENERATION_QUEUES_BY_PRIORITY, slots=threads).install()
    worker = dramatiq.Worker(
        broker,
        queues=set(GENERATION_QUEUES_BY_PRIORITY),
        worker_threads=threads,
        worker_timeout=worker_timeout_ms,
    )
    worker.queue_prefetch = threads  # what dramatiq_queue_prefetch=<threads> sets, without the env var
    return worker


def start_embedded(
    broker: dramatiq.Broker,
    *,
    storage: Storage,
    cancel_checker: CancelChecker | None = None,
    model_root: Path | None = None,
    sink: EventSink | None = None,
    progress_interval: float = 0.25,
) -> dramatiq.Worker:
    """Runs the GPU lanes inside this process on `broker` (the backend's embedded mode), with the
    tiny-wan route on the CPU. Returns the started Worker; `worker.stop()` ends it."""
    runner = Runner(
        storage=storage,
        sink=sink or broker_sink(broker),
        cancel_checker=cancel_checker,
        model_root=model_root or WorkerSettings.from_env().model_root,
        device="cpu",
        tiny_device="cpu",
        progress_interval=progress_interval,
    )
    pipelines.family_module(FAMILY_TINY_WAN)  # import diffusers now rather than in the first job
    worker = build_worker(broker, runner, threads=1)
    worker.start()
    logger.info("embedded GPU worker started on %s", ", ".join(GENERATION_QUEUES_BY_PRIORITY))
    return worker
