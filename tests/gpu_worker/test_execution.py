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
        assert (terminal.reason_code, terminal.retryable, terminal.message) == expected
        assert event_log.of(terminal.job_id)[-1] == terminal  # sent, as the last event of its job


def test_a_retry_is_announced_alike_at_the_stage_each_kind_starts_at(
    runner, trainer, storage, event_log, monkeypatch
):
    def load(route):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(runner, "load_model", load)

    terminals = _run_both(runner, trainer, storage, final_attempt=False)

    first_stage = {JOB_TYPE_GENERATION: STAGE_LOADING_MODEL, JOB_TYPE_TRAINING: STAGE_PREPARING}
    for job_type, outcome in terminals.items():
        last = event_log.of(outcome.job_id)[-1]
        assert (outcome.reason_code, outcome.retryable) == (OUT_OF_MEMORY, True)
        assert not any(event.is_terminal for event in event_log.of(outcome.job_id))
        assert (last.kind, last.stage, last.job_type) == ("stage", first_stage[job_type], job_type)
        assert (last.reason_code, last.message) == (OUT_OF_MEMORY, "the GPU ran out of memory; retrying")


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

    order = [(event.job_type, event.is_terminal) for event in event_log.events]
    assert order.index((JOB_TYPE_GENERATION, True)) < order.index((JOB_TYPE_TRAINING, False))
    assert order[-1] == (JOB_TYPE_TRAINING, True)
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
