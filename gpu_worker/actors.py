"""The Dramatiq side of a GPU worker: the generation actor on the generation lanes, the training actor
on the training lane (gpu_worker/training.py), and the worker around them.

Two ways to start it, one code path:

- `python -m gpu_worker` (gpu_worker/__main__.py): its own process with a RedisBroker, real routes on
  CUDA, cancel flags read from Redis;
- `start_embedded(broker, storage=...)`: inside another process on the broker it is given (the backend's
  embedded mode, a StubBroker), running the tiny-wan route on the CPU.

Events go back on QUEUE_JOB_EVENTS through `broker.enqueue`, as messages of the backend's one job-events
actor (ACTOR_JOB_EVENT, which routes by job type), so this module needs no backend import. The actors
are declared on the broker they are given, never on the global one.

One worker serves all three lanes with one slot per GPU (gpu_worker/lanes.py): INSTANT, then ECONOMY,
then TRAINING (a training waiting past GPU_TRAINING_MAX_WAIT_S goes ahead of ECONOMY). A job whose GPU
work is done gives its slot back while its CPU tail (encode, quality gate, upload) runs on its own
thread, so the next job denoises meanwhile: the worker has `tail_threads` threads more than GPU slots,
and a message is still acked only after its terminal event, so retries and time limits cover the tail.

Training has its own time limit (GPU_TRAINING_TIME_LIMIT_S, longer than a generation's) and fewer
retries; a training that runs past its limit is reported TIMED_OUT at once rather than run again for as
long.

Every kind of job has the same actor, declared by `declare_lane_actor` from its `LaneActor` (actor
name, lanes, job kind, retry policy) and its handler (a `Runner`, a `Trainer`: `run` and
`report_failure`). A new kind of GPU job adds a `LaneActor` and one line in `build_worker`.

After a fatal CUDA error (gpu_worker/execution.py `is_fatal_gpu_error`) the job is reported failed and
retryable (the backend runs it again, on another worker), the executor refuses every later job and the
actor calls `on_gpu_fault`: `python -m gpu_worker` then stops and exits non-zero, so its supervisor
starts a new process with a new CUDA context.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dramatiq
import redis
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded
from redis.backoff import NoBackoff
from redis.retry import Retry

from gpu_worker import metrics, pipelines
from gpu_worker.content_credentials import content_credentials_from_settings
from gpu_worker.contract import (
    ACTOR_RUN_GENERATION,
    ACTOR_TRAIN_CHARACTER,
    BAD_INPUT,
    CANCELED,
    EVENT_ACTORS,
    FAMILY_TINY_WAN,
    GENERATION_QUEUES_BY_PRIORITY,
    GPU_QUEUES_BY_PRIORITY,
    QUEUE_GPU_INSTANT,
    QUEUE_GPU_TRAINING,
    QUEUE_JOB_EVENTS,
    TIMED_OUT,
    ContractError,
    JobEvent,
    cancel_key,
    gpu_queues_by_priority,
    log_context_bind,
)
from gpu_worker.execution import GpuExecutor, JobKind
from gpu_worker.lanes import LaneGate
from gpu_worker.log_context import install_log_context
from gpu_worker.runner import GENERATION, CancelChecker, EventSink, Runner
from gpu_worker.settings import (
    DEFAULT_TIME_LIMIT_S,
    DEFAULT_TRAINING_MAX_WAIT_S,
    DEFAULT_TRAINING_TIME_LIMIT_S,
    LabelSettings,
    WorkerSettings,
)
from gpu_worker.storage import Storage
from gpu_worker.training import TRAINING, Trainer

logger = logging.getLogger(__name__)

# Retries of a retryable failure (out of memory, a lost model, an internal error) inside one backend
# attempt; after them the worker reports the failure as terminal and the backend may try the fallback.
MAX_RETRIES = 2
MIN_BACKOFF_MS = 10_000
MAX_BACKOFF_MS = 120_000
# A training is long: one retry of a retryable failure (out of memory, a lost model), on any GPU.
MAX_TRAINING_RETRIES = 1


class JobFailed(Exception):
    """A job failed for good: its terminal event is sent. In the actor's `throws`: never retried."""


class RetryableJobFailure(Exception):
    """A retryable failure with retries left: Dramatiq's Retries middleware runs the job again."""


def broker_sink(broker: dramatiq.Broker) -> EventSink:
    """Sends events on QUEUE_JOB_EVENTS as messages of the backend's actor for their job type
    (ACTOR_JOB_EVENT, one for every job type)."""
    broker.declare_queue(QUEUE_JOB_EVENTS)
    install_log_context(broker)  # an event carries the context of its job (gpu_worker/log_context.py)

    def send(event: JobEvent) -> None:
        broker.enqueue(
            dramatiq.Message(
                queue_name=QUEUE_JOB_EVENTS,
                actor_name=EVENT_ACTORS[event.job_type],
                args=(event.to_message(),),
                kwargs={},
                options={},
            )
        )

    return send


def redis_signal_client(url: str, *, timeout_s: float) -> redis.Redis:
    """A Redis client for what a running job sends and reads from its steps (events, cancel flags): a
    call gives up after `timeout_s` to connect and `timeout_s` to answer, without retrying, so a network
    partition costs a denoising loop a bounded wait (and gpu_worker/execution.py then skips such calls
    for a while) instead of hanging it."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), retries=0),
    )


def redis_cancel_checker(client: Any) -> CancelChecker:
    """Reads the cancel flag the backend sets (contract.cancel_key) in Redis."""

    def canceled(job_id: str) -> bool:
        return bool(client.exists(cancel_key(job_id)))

    return canceled


@dataclass(frozen=True)
class LaneActor:
    """How one kind of job sits on the GPU lanes."""

    actor_name: str
    queues: tuple[str, ...]  # the lanes it serves; the first is the actor's (messages name their own)
    kind: JobKind
    max_retries: int  # of a retryable failure, within one backend attempt
    retry_past_time_limit: bool  # False: a run past the time limit is reported TIMED_OUT at once
    message_noun: str  # in "the {message_noun} message is malformed"


GENERATION_LANES = LaneActor(
    actor_name=ACTOR_RUN_GENERATION,
    queues=GENERATION_QUEUES_BY_PRIORITY,
    kind=GENERATION,
    max_retries=MAX_RETRIES,
    retry_past_time_limit=True,
    message_noun="job",
)
TRAINING_LANE = LaneActor(
    actor_name=ACTOR_TRAIN_CHARACTER,
    queues=(QUEUE_GPU_TRAINING,),
    kind=TRAINING,
    max_retries=MAX_TRAINING_RETRIES,
    retry_past_time_limit=False,  # another run would take as long
    message_noun="training job",
)


class JobHandler(Protocol):
    """What runs a lane's jobs: a `Runner`, a `Trainer` (on the GPU's executor)."""

    executor: GpuExecutor

    def run(self, job: Any, *, final_attempt: bool = True) -> JobEvent: ...

    def report_failure(
        self, job_id: str, reason_code: str, message: str, *, attempt: int = 1
    ) -> JobEvent: ...


def declare_lane_actor(
    broker: dramatiq.Broker,
    lane: LaneActor,
    handler: JobHandler,
    *,
    time_limit_s: int,
    on_gpu_fault: Callable[[], None] | None = None,
) -> dramatiq.Actor:
    """Declares `lane.actor_name` on `broker` (on every queue of the lane) and returns it.

    `on_gpu_fault` is called (from the worker thread) after a job found the GPU broken: it should stop
    the worker and end the process."""
    if not any(isinstance(m, CurrentMessage) for m in broker.middleware):
        broker.add_middleware(CurrentMessage())
    install_log_context(broker)
    noun = lane.kind.noun

    def run_job(job: dict[str, Any] | None = None) -> None:
        message = CurrentMessage.get_current_message()
        options = message.options if message is not None else {}
        final_attempt = options.get("retries", 0) >= options.get("max_retries", lane.max_retries)

        # 1. Read the job; a message that breaks the contract fails at once (and says so when it can)
        try:
            parsed = lane.kind.job_class.from_message(job)
        except ContractError as exc:
            job_id = job.get("job_id") if isinstance(job, dict) else None
            attempt = job.get("attempt") if isinstance(job, dict) else None
            if isinstance(job_id, str) and job_id:
                handler.report_failure(
                    job_id,
                    BAD_INPUT,
                    f"the {lane.message_noun} message is malformed: {exc}",
                    attempt=attempt if isinstance(attempt, int) and attempt >= 1 else 1,
                )
            raise JobFailed(f"malformed {lane.message_noun} message: {exc}") from None

        # 2. Run it; past the time limit it is retried like any retryable failure, or reported at once
        # The route labels logs and metrics; a job kind need not have one (a lane runs any declared kind)
        route = getattr(getattr(parsed, "route", None), "name", None) or "none"
        # Every record of the job names it (the LogContextMiddleware unbinds it with the message's context)
        log_context_bind(job_id=parsed.job_id)
        logger.info("%s %s attempt %s on %s: started", noun, parsed.job_id, parsed.attempt, route)
        try:
            event = handler.run(parsed, final_attempt=final_attempt)
        except TimeLimitExceeded:
            metrics.job_timed_out(noun, route)
            if lane.retry_past_time_limit and not final_attempt:
                raise
            handler.report_failure(
                parsed.job_id, TIMED_OUT, f"the {noun} took too long", attempt=parsed.attempt
            )
            raise JobFailed(f"{noun} {parsed.job_id} ran past the time limit") from None
        metrics.job_finished(noun, route, event)
        logger.info(
            "%s %s attempt %s on %s: %s%s",
            noun,
            parsed.job_id,
            parsed.attempt,
            route,
            event.kind,
            f" ({event.reason_code})" if event.reason_code else "",
        )

        # 3. A broken GPU: the job is reported (retryable, for another worker); this process must end
        if handler.executor.broken is not None:
            logger.critical("the GPU is broken (%s): stopping this worker", handler.executor.broken)
            if on_gpu_fault is not None:
                on_gpu_fault()

        # 4. Tell Dramatiq: done, retry, or failed for good (the terminal event is already sent)
        if event.kind == "completed" or event.reason_code == CANCELED:
            return
        if handler.executor.retries_here(lane.kind, event, final_attempt=final_attempt):
            raise RetryableJobFailure(f"{noun} {parsed.job_id}: {event.reason_code}")
        raise JobFailed(f"{noun} {parsed.job_id}: {event.reason_code}: {event.message}")

    for queue in lane.queues:
        broker.declare_queue(queue)
    return dramatiq.actor(
        run_job,
        actor_name=lane.actor_name,
        queue_name=lane.queues[0],
        broker=broker,
        max_retries=lane.max_retries,
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
    tail_threads: int = 1,
    time_limit_s: int = DEFAULT_TIME_LIMIT_S,
    worker_timeout_ms: int = 250,
    trainer: Trainer | None = None,
    training_time_limit_s: int = DEFAULT_TRAINING_TIME_LIMIT_S,
    training_max_wait_s: float = DEFAULT_TRAINING_MAX_WAIT_S,
    on_gpu_fault: Callable[[], None] | None = None,
    held_routes: Sequence[str] = (),
) -> dramatiq.Worker:
    """A Worker on every GPU lane: INSTANT, then ECONOMY, then TRAINING (a training waiting longer than
    `training_max_wait_s` goes ahead of ECONOMY), nothing prefetched while busy (gpu_worker/lanes.py),
    `threads` jobs on the GPU (one per GPU) and up to `tail_threads` more in their CPU tail. Training
    runs on `trainer` (by default one on `runner`'s models, so a GPU holds one copy of each model).
    `held_routes` (the routes it preloads): their queues of each generation lane come just before that
    lane (contract.gpu_queues_by_priority). `on_gpu_fault`: see `declare_lane_actor`."""
    trainer = trainer or Trainer(runner)
    queues = gpu_queues_by_priority(held_routes)
    generation_queues = tuple(queue for queue in queues if queue != QUEUE_GPU_TRAINING)
    generation_lanes = dataclasses.replace(
        GENERATION_LANES,
        queues=(
            *GENERATION_LANES.queues,
            *(q for q in generation_queues if q not in GENERATION_LANES.queues),
        ),
    )
    declare_lane_actor(broker, generation_lanes, runner, time_limit_s=time_limit_s, on_gpu_fault=on_gpu_fault)
    declare_lane_actor(
        broker, TRAINING_LANE, trainer, time_limit_s=training_time_limit_s, on_gpu_fault=on_gpu_fault
    )
    gate = LaneGate(
        broker,
        queues,
        slots=threads,
        tail_slots=tail_threads,
        max_wait_ms={QUEUE_GPU_TRAINING: int(training_max_wait_s * 1000)},
        first_lanes=queues.index(QUEUE_GPU_INSTANT) + 1,  # INSTANT's route queues and INSTANT
    ).install()
    metrics.QUEUE_DEPTH.watch(gate.waiting, queues)

    def gpu_slot_free() -> None:  # on the job's thread, as its tail starts
        message = CurrentMessage.get_current_message()
        if message is not None:
            gate.left_gpu(message.message_id)

    for executor in {runner.executor, trainer.executor}:
        executor.on_gpu_released = gpu_slot_free
    worker = dramatiq.Worker(
        broker,
        queues=set(queues),
        worker_threads=threads + tail_threads,
        worker_timeout=worker_timeout_ms,
    )
    # What dramatiq_queue_prefetch sets, without the env var; the gate fetches one message at a time.
    worker.queue_prefetch = threads + tail_threads
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
    """Runs the GPU lanes inside this process on `broker` (the backend's embedded mode): generations
    and Soul ID trainings, with the tiny-wan route on the CPU, their videos labelled as the settings
    say (C2PA_*; without signing material, a development chain made now). Returns the started Worker;
    `worker.stop()` ends it."""
    runner = Runner(
        storage=storage,
        sink=sink or broker_sink(broker),
        cancel_checker=cancel_checker,
        model_root=model_root or WorkerSettings.from_env().model_root,
        device="cpu",
        tiny_device="cpu",
        progress_interval=progress_interval,
        content_credentials=content_credentials_from_settings(LabelSettings.from_env(os.environ)),
    )
    pipelines.family_module(FAMILY_TINY_WAN)  # import diffusers now rather than in the first job
    worker = build_worker(broker, runner, threads=1)
    worker.start()
    logger.info("embedded GPU worker started on %s", ", ".join(GPU_QUEUES_BY_PRIORITY))
    return worker
