"""The execution wrapper every GPU job runs in (gpu_worker/execution.py): a generation and a training
fail the same way for the same cause, never run at once on one GPU, and free memory after running out
of it; a new kind of job plugs into the executor and the lanes with a `JobKind` and a `LaneActor`."""

from __future__ import annotations

import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import dramatiq
import pytest
import torch
from dramatiq.brokers.stub import StubBroker

from gpu_worker import execution
from gpu_worker.actors import LaneActor, declare_lane_actor
from gpu_worker.contract import (
    BAD_INPUT,
    CANCELED,
    INTERNAL,
    JOB_TYPE_GENERATION,
    JOB_TYPE_TRAINING,
    MODEL_UNAVAILABLE,
    OUT_OF_MEMORY,
    STAGE_DECODING,
    STAGE_LOADING_MODEL,
    STAGE_PREPARING,
    ContractError,
    JobEvent,
)
from gpu_worker.execution import BadInput, GpuExecutor, JobCanceled, JobKind, JobRun
from gpu_worker.pipelines import ModelUnavailable
from gpu_worker.runner import EventEmitter
from gpu_worker.training import Trainer
from tests.fixtures.gpu import make_job
from tests.gpu_worker.test_training import store_photos, training_job


@pytest.fixture
def trainer(runner) -> Trainer:
    return Trainer(runner)


def _run_both(runner, trainer, storage, **run_options) -> dict[str, JobEvent]:
    """One generation and one training; their terminal events by job type."""
    keys = store_photos(storage, 10)
    return {
        JOB_TYPE_GENERATION: runner.run(make_job(), **run_options),
        JOB_TYPE_TRAINING: trainer.run(training_job(keys), **run_options),
    }


# --- The same causes, the same failures --------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (JobCanceled(), (CANCELED, False, "canceled")),
        (BadInput("the LoRA weights are missing"), (BAD_INPUT, False, "the LoRA weights are missing")),
        (
            ModelUnavailable("/models/wan22 has no model_index.json"),
            (MODEL_UNAVAILABLE, True, "the model is not available on this worker"),
        ),
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            (OUT_OF_MEMORY, True, "the GPU ran out of memory"),
        ),
        (RuntimeError("cuDNN error: something deep"), (INTERNAL, True, "internal error")),
    ],
    ids=["canceled", "bad-input", "model-unavailable", "out-of-memory", "unexpected"],
)
def test_a_generation_and_a_training_fail_alike_for_the_same_cause(
    runner, trainer, storage, event_log, monkeypatch, error, expected
):
    def load(route):
        raise error

    monkeypatch.setattr(runner, "load_model", load)  # both kinds load the route's model through the runner

    terminals = _run_both(runner, trainer, storage)

    for job_type, terminal in terminals.items():
        assert terminal.kind == "failed" and terminal.job_type == job_type
        assert (terminal.reason_code, terminal.retryable) == expected[:2]
        # A generation out of memory says it already ran once more with less memory (test_runner.py).
        assert terminal.message.startswith(expected[2])
        assert event_log.of(terminal.job_id)[-1] == terminal  # sent, as the last event of its job


def test_a_retry_is_announced_alike_at_the_stage_each_kind_starts_at(
    runner, trainer, storage, event_log, monkeypatch
):
    def load(route):  # not out of memory: a generation retries that in-process first (test_runner.py)
        raise ModelUnavailable("/models/wan22 has no model_index.json")

    monkeypatch.setattr(runner, "load_model", load)

    terminals = _run_both(runner, trainer, storage, final_attempt=False)

    first_stage = {JOB_TYPE_GENERATION: STAGE_LOADING_MODEL, JOB_TYPE_TRAINING: STAGE_PREPARING}
    for job_type, outcome in terminals.items():
        last = event_log.of(outcome.job_id)[-1]
        assert (outcome.reason_code, outcome.retryable) == (MODEL_UNAVAILABLE, True)
        assert not any(event.is_terminal for event in event_log.of(outcome.job_id))
        assert (last.kind, last.stage, last.job_type) == ("stage", first_stage[job_type], job_type)
        assert (last.reason_code, last.message) == (
            MODEL_UNAVAILABLE,
            "the model is not available on this worker; retrying",
        )


# --- One job at a time per GPU -----------------------------------------------------------------


class WatchedLock:
    """A lock that says when a second caller had to wait for it."""

    def __init__(self) -> None:
        self.inner = threading.Lock()
        self.contended = threading.Event()

    def __enter__(self) -> WatchedLock:
        if not self.inner.acquire(blocking=False):
            self.contended.set()
            self.inner.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.inner.release()


def test_a_training_waits_for_the_running_generation_on_the_same_gpu(make_runner, storage, event_log):
    generation = make_job()
    held, release = threading.Event(), threading.Event()

    def cancel_checker(job_id: str) -> bool:
        if job_id == generation.job_id and not held.is_set():
            held.set()  # the generation holds the GPU from here until the test lets it go
            assert release.wait(timeout=60)
        return False

    runner = make_runner(cancel_checker=cancel_checker)
    trainer = Trainer(runner)
    assert trainer.executor is runner.executor
    lock = runner.executor.lock = WatchedLock()
    keys = store_photos(storage, 10)

    generating = threading.Thread(target=runner.run, args=(generation,))
    generating.start()
    assert held.wait(timeout=60)
    training = threading.Thread(target=trainer.run, args=(training_job(keys),))
    training.start()
    assert lock.contended.wait(timeout=60)  # the training is at the lock, not in its steps
    assert event_log.of("c1") == []
    release.set()
    generating.join(timeout=120)
    training.join(timeout=120)

    # The training starts once the generation's GPU work (to its decode) is done; the generation's
    # tail (encode, gate, upload) may overlap it.
    order = [(event.job_type, event.stage) for event in event_log.events]
    first_training = next(i for i, (job_type, _) in enumerate(order) if job_type == JOB_TYPE_TRAINING)
    assert order.index((JOB_TYPE_GENERATION, STAGE_DECODING)) < first_training
    assert [event.is_terminal for event in event_log.of("c1")][-1]
    assert [event.kind for event in event_log.events if event.is_terminal] == ["completed", "completed"]


# --- Memory after running out of it ------------------------------------------------------------


def test_memory_is_freed_after_out_of_memory_once_the_failed_steps_are_gone(monkeypatch):
    activations: list[weakref.ref] = []
    at_free: list[tuple[Any, bool]] = []

    def steps(run: JobRun) -> JobEvent:
        tensor = torch.ones(1024)  # what a step holds when the GPU runs out of memory
        activations.append(weakref.ref(tensor))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def free_memory() -> None:
        at_free.append((sys.exc_info()[0], activations[0]() is None))

    monkeypatch.setattr(execution, "free_memory", free_memory)
    sent: list[JobEvent] = []
    terminal = GpuExecutor(sink=sent.append).run(ECHO, EchoJob("e1"), steps)

    assert (terminal.reason_code, terminal.retryable, sent) == (OUT_OF_MEMORY, True, [terminal])
    # Called once, outside any except block, when nothing holds the failed step's tensors any more.
    assert at_free == [(None, True)]


# --- A new kind of job plugs in ------------------------------------------------------------------


@dataclass(frozen=True)
class EchoJob:
    """The smallest job a kind can have: an id and an attempt, read from a message."""

    job_id: str
    attempt: int = 1

    @classmethod
    def from_message(cls, data: Any) -> EchoJob:
        if not (isinstance(data, dict) and isinstance(data.get("job_id"), str) and data["job_id"]):
            raise ContractError("job_id must be a non-empty string")
        if data.get("broken"):
            raise ContractError("broken on purpose")
        return cls(job_id=data["job_id"], attempt=data.get("attempt", 1))


ECHO = JobKind(noun="echo", job_class=EchoJob, events=EventEmitter, retry_stage=STAGE_LOADING_MODEL)


class Echo:
    """A handler of the echo kind: its steps, on an executor."""

    def __init__(self, executor: GpuExecutor) -> None:
        self.executor = executor

    def run(self, job: Any, *, final_attempt: bool = True) -> JobEvent:
        return self.executor.run(ECHO, job, self._echo, final_attempt=final_attempt)

    def report_failure(self, job_id: str, reason_code: str, message: str, *, attempt: int = 1) -> JobEvent:
        return self.executor.report_failure(ECHO, job_id, reason_code, message, attempt=attempt)

    def _echo(self, run: JobRun) -> JobEvent:
        with run.timed("echo"):
            run.check_cancel()
        return run.completed(seconds_per_step=run.timings["echo"], outputs={"echo": run.job.job_id})


def test_a_new_kind_declares_its_lane_actor_with_one_call():
    broker = StubBroker()
    broker.emit_after("process_boot")
    sent: list[JobEvent] = []
    lane = LaneActor(
        actor_name="gpu_test_echo",
        queues=("gpu-test-echo",),
        kind=ECHO,
        max_retries=0,
        retry_past_time_limit=False,
        message_noun="echo job",
    )
    declare_lane_actor(broker, lane, Echo(GpuExecutor(sink=sent.append)), time_limit_s=30)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        for job in ({"job_id": "e1"}, {"job_id": "e2", "attempt": 3, "broken": True}):
            broker.enqueue(dramatiq.Message("gpu-test-echo", "gpu_test_echo", (), {"job": job}, {}))
        broker.join("gpu-test-echo", timeout=30_000, fail_fast=False)
    finally:
        worker.stop(timeout=10_000)
        broker.close()

    done, refused = sent
    assert (done.job_id, done.kind, done.outputs) == ("e1", "completed", {"echo": "e1"})
    assert (refused.job_id, refused.kind, refused.reason_code, refused.attempt) == (
        "e2",
        "failed",
        BAD_INPUT,
        3,
    )
    assert refused.message == "the echo job message is malformed: broken on purpose"
    assert len(broker.dead_letters) == 1  # the refused message, never retried


# --- A fatal GPU error ends the worker -----------------------------------------------------------

FATAL_GPU_ERRORS = [
    "CUDA error: an illegal memory access was encountered",
    "CUDA error: device-side assert triggered\nCompile with `TORCH_USE_CUDA_DSA` to enable DSA.",
    "CUDA error: uncorrectable ECC error encountered",
    "CUDA error: unspecified launch failure",
]


@pytest.mark.parametrize("text", FATAL_GPU_ERRORS)
def test_a_fatal_cuda_error_fails_the_job_retryable_and_refuses_every_later_job(
    runner, trainer, storage, event_log, monkeypatch, text
):
    loads = []

    def load(route):
        loads.append(route)
        raise RuntimeError(text)

    monkeypatch.setattr(runner, "load_model", load)
    keys = store_photos(storage, 10)

    failed = runner.run(make_job(), final_attempt=False)  # sent as terminal all the same
    refused = [runner.run(make_job()), trainer.run(training_job(keys))]

    assert (failed.kind, failed.reason_code, failed.retryable) == ("failed", INTERNAL, True)
    assert failed.message == "the GPU failed; the job will run on another worker"
    assert runner.executor.broken == f"RuntimeError: {text}"
    assert [(e.kind, e.reason_code, e.retryable) for e in refused] == [("failed", INTERNAL, True)] * 2
    assert len(loads) == 1  # nothing ran after the fault
    assert [e for e in event_log.events if e.is_terminal] == [failed, *refused]


# As torch 2.11 raised them on an H200 (index out of bounds in a CUDA kernel; 200 GiB asked for): after
# the first every CUDA call failed the same way, after the second the GPU worked on.
REAL_DEVICE_SIDE_ASSERT = (
    "CUDA error: device-side assert triggered\nSearch for `cudaErrorAssert' in https://docs.nvidia.com/cuda/"
    "cuda-runtime-api/group__CUDART__TYPES.html for more information.\nCUDA kernel errors might be "
    "asynchronously reported at some other API call, so the stacktrace below might be incorrect.\nFor "
    "debugging consider passing CUDA_LAUNCH_BLOCKING=1\nCompile with `TORCH_USE_CUDA_DSA` to enable "
    "device-side assertions.\n"
)
REAL_OUT_OF_MEMORY = (
    "CUDA out of memory. Tried to allocate 200.00 GiB. GPU 0 has a total capacity of 139.80 GiB of which "
    "139.29 GiB is free. Including non-PyTorch memory, this process has 518.00 MiB memory in use. Of the "
    "allocated memory 0 bytes is allocated by PyTorch, and 0 bytes is reserved by PyTorch but unallocated."
)


def test_the_errors_torch_raises_on_a_gpu_are_classified():
    assert execution.is_fatal_gpu_error(torch.AcceleratorError(REAL_DEVICE_SIDE_ASSERT))
    assert not execution.is_fatal_gpu_error(torch.OutOfMemoryError(REAL_OUT_OF_MEMORY))


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"),
        ValueError("an illegal memory access, says a message that is not from CUDA"),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ],
    ids=["other-runtime-error", "not-a-runtime-error", "out-of-memory"],
)
def test_other_errors_leave_the_gpu_usable(error):
    assert not execution.is_fatal_gpu_error(error)


class FaultyEcho(Echo):
    """An echo whose first job hits a fatal CUDA error."""

    def __init__(self, executor: GpuExecutor) -> None:
        super().__init__(executor)
        self.ran: list[str] = []

    def _echo(self, run: JobRun) -> JobEvent:
        self.ran.append(run.job.job_id)
        if len(self.ran) == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super()._echo(run)


def test_the_lane_actor_asks_the_worker_to_stop_after_a_fatal_gpu_error_and_runs_nothing_more():
    broker = StubBroker()
    broker.emit_after("process_boot")
    sent: list[JobEvent] = []
    faults: list[int] = []
    lane = LaneActor(
        actor_name="gpu_test_echo",
        queues=("gpu-test-echo",),
        kind=ECHO,
        max_retries=2,  # attempts left: the fatal job is still reported, not retried on this worker
        retry_past_time_limit=False,
        message_noun="echo job",
    )
    handler = FaultyEcho(GpuExecutor(sink=sent.append))
    declare_lane_actor(broker, lane, handler, time_limit_s=30, on_gpu_fault=lambda: faults.append(1))
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        for job_id in ("e1", "e2"):
            broker.enqueue(
                dramatiq.Message("gpu-test-echo", "gpu_test_echo", (), {"job": {"job_id": job_id}}, {})
            )
        broker.join("gpu-test-echo", timeout=30_000, fail_fast=False)
    finally:
        worker.stop(timeout=10_000)
        broker.close()

    assert handler.ran == ["e1"]
    assert [(e.job_id, e.kind, e.reason_code, e.retryable) for e in sent] == [
        ("e1", "failed", INTERNAL, True),
        ("e2", "failed", INTERNAL, True),
    ]
    assert faults == [1, 1]  # asked after each job that found the GPU broken
    assert len(broker.dead_letters) == 2  # neither retried here: the backend retries them elsewhere
