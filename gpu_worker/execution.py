"""One GPU job of any kind, from its message to its terminal event.

A generation (gpu_worker/runner.py) and a Soul ID training (gpu_worker/training.py) are two kinds of one
thing: a job that holds the GPU, reports stages and progress, stops at a cancel flag and ends in exactly
one terminal event. This module is that thing, once. `GpuExecutor` runs one job at a time on the GPU
(the pipelines are not thread-safe and a training adapts the generation transformer in place, so one
executor per GPU is shared by every kind), numbers the run's events, times its steps, turns what went
wrong into a reason code, frees GPU memory after an out-of-memory error (and, for a kind that can run
with less memory, runs the job once more in-process with `run.low_memory` set), announces a retry
instead of a terminal failure when the caller will run the job again, and stops taking jobs after a
fatal CUDA error. A kind brings a `JobKind` and its own steps, nothing else:

    executor = GpuExecutor(sink=events.append, cancel_checker=flags)
    event = executor.run(GENERATION, job, steps)     # steps(run: JobRun) -> the completed event

The GPU never waits for a job's CPU tail. Steps that end in CPU work (encode, quality gate, upload)
return `run.after_gpu(tail)` instead of an event: the executor releases the lock, calls
`on_gpu_released` (the worker's lane gate then lets the next job in, gpu_worker/actors.py) and runs
`tail(run)` on the job's own thread while the next job denoises; the terminal event is sent when the
tail ends, and the tail's errors become reason codes as the steps' do. A tail that needs the GPU again
(a re-render) takes it with `with run.gpu():`. The job's work folder lasts until its tail ends.

What a step raises, and the terminal event it becomes:

    JobCanceled              CANCELED            the cancel flag was seen (between stages or at a step)
    BadInput                 BAD_INPUT           the job cannot run as asked: its message (and outputs)
    ModelUnavailable         MODEL_UNAVAILABLE   the checkpoint is not on this worker (retryable)
    torch.OutOfMemoryError   OUT_OF_MEMORY       retryable; memory is freed once the traceback is gone,
                                                 then (kind.low_memory_retry) one more run with
                                                 `run.low_memory`; never retried by the worker after it
    a fatal CUDA error       INTERNAL            retryable, on another worker: the CUDA context is broken
                                                 (`is_fatal_gpu_error`), so the executor is `broken`,
                                                 refuses every later job and the process must exit
    JobError                 its reason code     a kind's own failure, with a message safe to show
    anything else            INTERNAL            logged with its traceback; the event says no more
"""

from __future__ import annotations

import contextlib
import gc
import logging
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from gpu_worker.contract import (
    BAD_INPUT,
    CANCELED,
    INTERNAL,
    JOB_TYPE_GENERATION,
    MODEL_UNAVAILABLE,
    OUT_OF_MEMORY,
    JobEvent,
    is_retryable,
)
from gpu_worker.pipelines import ModelUnavailable

logger = logging.getLogger(__name__)

EventSink = Callable[[JobEvent], None]
CancelChecker = Callable[[str], bool]
# After a best-effort call to the event sink or the cancel flags failed (a timeout, a refused
# connection), such calls are skipped for this long: a network partition then costs a denoising loop
# one timeout per period, not one per step. Terminal events are always sent.
SIGNAL_BACKOFF_S = 10.0


# Errors after which the process's CUDA context is unusable (every later CUDA call fails or returns
# garbage): only a new process recovers. Matched in lower case in the text of a RuntimeError (torch raises
# CUDA errors as RuntimeError, or its subclass torch.AcceleratorError).
FATAL_GPU_ERROR_MARKERS: tuple[str, ...] = (
    "illegal memory access",
    "an illegal instruction",
    "misaligned address",
    "device-side assert",
    "ecc error",
    "unspecified launch failure",
    "launch timed out",
    "hardware stack error",
    "uncorrectable nvlink error",
    "cuda error: unknown error",
)


def is_fatal_gpu_error(error: BaseException) -> bool:
    """Whether `error` leaves the process's CUDA context broken (see FATAL_GPU_ERROR_MARKERS)."""
    if not isinstance(error, RuntimeError) or isinstance(error, torch.OutOfMemoryError):
        return False
    text = str(error).lower()
    return any(marker in text for marker in FATAL_GPU_ERROR_MARKERS)


class JobCanceled(Exception):
    pass


class BadInput(Exception):
    """The job cannot run as asked; the message is safe to show, `outputs` go into the failed event."""

    def __init__(self, message: str, *, outputs: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.outputs = outputs or {}


class GpuBroken(Exception):
    """A tail asked for the GPU after another job broke it (`GpuExecutor.broken`)."""


class JobError(Exception):
    """A failure a kind names itself: `public_message` is shown, the exception's text only logged."""

    reason_code: ClassVar[str] = INTERNAL
    public_message: ClassVar[str] = "internal error"


# --- Events -----------------------------------------------------------------------------------


class JobEvents:
    """Numbers and sends one run's events; a kind sets `job_type` and where its stages sit.

    Sequences start at the current time in microseconds, so a later run of the same job (a retry, a
    redelivery on another worker) always numbers its events above every earlier run's.
    """

    job_type: ClassVar[str] = JOB_TYPE_GENERATION
    stage_progress: ClassVar[Mapping[str, float]] = {}  # where each stage sits on the job's 0..1 progress

    def __init__(self, job_id: str, attempt: int, sink: EventSink) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.sink = sink
        self._sequence = time.time_ns() // 1_000
        self._last_progress_at: float | None = None
        self._sink_down_until = 0.0

    def build(self, kind: str, **fields: Any) -> JobEvent:
        self._sequence += 1
        return JobEvent(
            job_id=self.job_id,
            sequence=self._sequence,
            kind=kind,
            attempt=self.attempt,
            emitted_at=time.time(),
            job_type=self.job_type,
            **fields,
        )

    def send(self, event: JobEvent) -> None:
        """Terminal events must arrive: a sink failure propagates (the broker then retries the job)."""
        self.sink(event)

    def send_best_effort(self, event: JobEvent) -> None:
        if time.monotonic() < self._sink_down_until:
            return
        try:
            self.sink(event)
        except Exception:
            self._sink_down_until = time.monotonic() + SIGNAL_BACKOFF_S
            logger.warning("could not send a %s event of job %s", event.kind, self.job_id, exc_info=True)

    def stage(self, stage: str, **fields: Any) -> None:
        fields.setdefault("progress", self.stage_progress[stage])
        self.send_best_effort(self.build("stage", stage=stage, **fields))

    def failed(self, reason_code: str, message: str, **fields: Any) -> JobEvent:
        return self.build(
            "failed", reason_code=reason_code, retryable=is_retryable(reason_code), message=message, **fields
        )

    def _progress_due(self, interval: float, *, force: bool = False) -> bool:
        """Throttles progress events: True (and the clock restarts) at most once per `interval`."""
        now = time.monotonic()
        if force or self._last_progress_at is None or now - self._last_progress_at >= interval:
            self._last_progress_at = now
            return True
        return False


# --- Kinds and runs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobKind:
    """What the executor (and the lane actor, gpu_worker/actors.py) needs to know of one kind of job."""

    noun: str  # in logs and failure messages: "job", "training"
    job_class: Any  # the contract class: `job_class.from_message(dict)` reads a message, or refuses it
    events: type[JobEvents]
    retry_stage: str  # the stage a retry is announced at: where the next run starts
    # True: after running out of memory, the job runs once more in-process with `run.low_memory` (its
    # steps then use less memory: VAE tiling for a generation); its OUT_OF_MEMORY is then final here.
    low_memory_retry: bool = False


@dataclass
class JobRun:
    """One run of one job: what its steps share with the executor."""

    job: Any
    events: JobEvents
    cancel_requested: Callable[[str], bool]
    work: Path = Path()  # a private folder (set by the executor), removed after the run
    low_memory: bool = False  # the run after an out-of-memory error: use less memory (kind.low_memory_retry)
    timings: dict[str, Any] = field(default_factory=dict)  # seconds per step name; `speed_profile`
    started: float = field(default_factory=time.perf_counter)
    # What `gpu` holds: nothing in the steps (they hold the lock), the GPU lock in a tail.
    gpu_lock: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext

    def after_gpu(self, tail: JobTail) -> AfterGpu:
        """What steps return to run `tail(run)` after the GPU lock is released."""
        return AfterGpu(self, tail)

    def gpu(self) -> contextlib.AbstractContextManager[None]:
        """In a tail: holds the GPU lock (waiting for the job on it) for work that needs the GPU again."""
        return self.gpu_lock()

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def check_cancel(self) -> None:
        if self.cancel_requested(self.job.job_id):
            raise JobCanceled

    def rounded_timings(self) -> dict[str, float]:
        return {
            name: round(value, 4) if isinstance(value, float) else value
            for name, value in self.timings.items()
        }

    def completed(self, *, seconds_per_step: float, **fields: Any) -> JobEvent:
        """The completed event; its timings end with the `total` and `seconds_per_step`."""
        self.timings["total"] = time.perf_counter() - self.started
        self.timings["seconds_per_step"] = seconds_per_step
        return self.events.build("completed", progress=1.0, timings=self.rounded_timings(), **fields)


JobTail = Callable[[JobRun], JobEvent]


@dataclass(frozen=True)
class AfterGpu:
    """What steps return when the rest of the job runs without the GPU lock: `tail(run)`."""

    run: JobRun
    tail: JobTail


JobSteps = Callable[[JobRun], JobEvent | AfterGpu]


# --- The executor -------------------------------------------------------------------------------


class GpuExecutor:
    """Runs GPU jobs of every kind one at a time on the GPU (their CPU tails may overlap the next
    job): share one per GPU between the kinds.

    After a fatal CUDA error `broken` says what happened: every later job fails at once (retryable, so
    the backend runs it on another worker) and the process should exit (gpu_worker/actors.py asks it to).
    """

    def __init__(self, *, sink: EventSink, cancel_checker: CancelChecker | None = None) -> None:
        self.sink = sink
        self.cancel_checker = cancel_checker or (lambda job_id: False)
        self.lock = threading.Lock()
        self.broken: str | None = None
        # Called on the job's thread when its GPU work is done and its tail starts (see the module doc).
        self.on_gpu_released: Callable[[], None] | None = None
        self._flags_down_until = 0.0

    def run(self, kind: JobKind, job: Any, steps: JobSteps, *, final_attempt: bool = True) -> JobEvent:
        """Runs `steps` on a job of `kind` (or its message) under the lock and returns the terminal
        event (completed or failed), which it has sent.

        With `final_attempt=False` a retryable failure is not sent as terminal (the caller retries the
        job; `retries_here` says when); a non-terminal event with the reason says a retry is coming.
        """
        if isinstance(job, dict):
            job = kind.job_class.from_message(job)
        events = kind.events(job.job_id, job.attempt, self.sink)
        with tempfile.TemporaryDirectory(prefix=f"gpu-{kind.noun}-") as work:
            with self.lock:
                if self.broken is not None:
                    outcome: JobEvent | AfterGpu = events.failed(INTERNAL, GPU_FAULT_MESSAGE)
                else:
                    outcome = self._execute(kind, job, events, steps, Path(work))
            if isinstance(outcome, AfterGpu):
                if self.on_gpu_released is not None:
                    self.on_gpu_released()
                outcome = self._finish(kind, outcome)
        if self.retries_here(kind, outcome, final_attempt=final_attempt):
            events.send_best_effort(
                events.build(
                    "stage",
                    stage=kind.retry_stage,
                    reason_code=outcome.reason_code,
                    retryable=True,
                    message=f"{outcome.message}; retrying",
                )
            )
            return outcome
        events.send(outcome)
        return outcome

    def retries_here(self, kind: JobKind, outcome: JobEvent, *, final_attempt: bool) -> bool:
        """Whether this worker runs the job again after `outcome` (so it was not sent as terminal): a
        retryable failure, attempts left, a GPU that still works, and not an out-of-memory error that
        a low-memory run already followed (the same shape would fail the same way)."""
        return (
            outcome.kind == "failed"
            and outcome.retryable
            and not final_attempt
            and self.broken is None
            and not (kind.low_memory_retry and outcome.reason_code == OUT_OF_MEMORY)
        )

    def report_failure(
        self, kind: JobKind, job_id: str, reason_code: str, message: str, *, attempt: int = 1
    ) -> JobEvent:
        """Sends a terminal failure decided outside a run (a time limit, a refused message)."""
        events = kind.events(job_id, attempt, self.sink)
        event = events.failed(reason_code, message)
        events.send(event)
        return event

    def cancel_requested(self, job_id: str) -> bool:
        if time.monotonic() < self._flags_down_until:
            return False
        try:
            return bool(self.cancel_checker(job_id))
        except Exception:  # the flag store is down: keep going rather than fail the job
            self._flags_down_until = time.monotonic() + SIGNAL_BACKOFF_S
            logger.warning("could not read the cancel flag of job %s", job_id, exc_info=True)
            return False

    @contextlib.contextmanager
    def gpu(self) -> Iterator[None]:
        """The GPU lock, for a tail's work on the GPU; refused (GpuBroken) once the GPU is broken."""
        with self.lock:
            if self.broken is not None:
                raise GpuBroken(self.broken)
            yield

    def _execute(
        self, kind: JobKind, job: Any, events: JobEvents, steps: JobSteps, work: Path
    ) -> JobEvent | AfterGpu:
        run = JobRun(job, events, self.cancel_requested, work=work)
        outcome = self._attempt(kind, run, steps)
        if outcome is not None:
            return outcome
        # Out of memory. Freed here, not in the except block: there the traceback still holds the
        # failed step's frames and every tensor they reference.
        free_memory()
        if not kind.low_memory_retry:
            return events.failed(OUT_OF_MEMORY, OUT_OF_MEMORY_MESSAGE, timings=run.rounded_timings())
        events.send_best_effort(
            events.build(
                "stage",
                stage=kind.retry_stage,
                reason_code=OUT_OF_MEMORY,
                retryable=True,
                message=f"{OUT_OF_MEMORY_MESSAGE}; retrying once with less memory",
            )
        )
        run = JobRun(job, events, self.cancel_requested, work=work, low_memory=True, started=run.started)
        outcome = self._attempt(kind, run, steps)
        if outcome is not None:
            return outcome
        free_memory()
        return events.failed(
            OUT_OF_MEMORY, f"{OUT_OF_MEMORY_MESSAGE} {LOW_MEMORY_RETRIED}", timings=run.rounded_timings()
        )

    def _finish(self, kind: JobKind, after: AfterGpu) -> JobEvent:
        """Runs a job's tail (the GPU lock released): its terminal event. Running out of memory here
        (in a re-render) is final for this run: the low-memory run is for the steps."""
        run = after.run
        run.gpu_lock = self.gpu
        outcome = self._attempt(kind, run, after.tail)
        if isinstance(outcome, AfterGpu):
            raise TypeError("a tail returns the terminal event, not another tail")
        if outcome is None:
            free_memory()
            return run.events.failed(OUT_OF_MEMORY, OUT_OF_MEMORY_MESSAGE, timings=run.rounded_timings())
        return outcome

    def _attempt(self, kind: JobKind, run: JobRun, steps: JobSteps) -> JobEvent | AfterGpu | None:
        """One run of the steps (or a tail): its outcome, or None when the GPU ran out of memory (not
        yet freed)."""
        events = run.events
        what = f"{kind.noun} {run.job.job_id}"
        try:
            return steps(run)
        except GpuBroken:
            return events.failed(INTERNAL, GPU_FAULT_MESSAGE, timings=run.rounded_timings())
        except JobCanceled:
            return events.failed(CANCELED, "canceled", timings=run.rounded_timings())
        except BadInput as exc:
            return events.failed(BAD_INPUT, str(exc), outputs=exc.outputs, timings=run.rounded_timings())
        except ModelUnavailable as exc:
            logger.error("%s: %s", what, exc)
            return events.failed(MODEL_UNAVAILABLE, "the model is not available on this worker")
        except JobError as exc:
            logger.error("%s: %s", what, exc)
            return events.failed(exc.reason_code, exc.public_message, timings=run.rounded_timings())
        except torch.OutOfMemoryError:
            # The traceback as text: a handler that keeps records (pytest's, a memory handler) would
            # otherwise keep the failed step's frames, and their tensors, alive.
            logger.warning("%s ran out of GPU memory\n%s", what, traceback.format_exc())
            return None
        except Exception as exc:
            if is_fatal_gpu_error(exc):
                self.broken = f"{type(exc).__name__}: {exc}"
                logger.critical("%s: fatal GPU error, this worker takes no more jobs", what, exc_info=True)
                return events.failed(INTERNAL, GPU_FAULT_MESSAGE, timings=run.rounded_timings())
            logger.exception("%s failed", what)
            return events.failed(INTERNAL, "internal error", timings=run.rounded_timings())


OUT_OF_MEMORY_MESSAGE = "the GPU ran out of memory"
LOW_MEMORY_RETRIED = "(already retried once with less memory)"
GPU_FAULT_MESSAGE = "the GPU failed; the job will run on another worker"


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = [
    "AfterGpu",
    "BadInput",
    "CancelChecker",
    "EventSink",
    "GpuExecutor",
    "JobCanceled",
    "JobError",
    "JobEvents",
    "JobKind",
    "JobRun",
    "JobTail",
    "free_memory",
    "is_fatal_gpu_error",
]
