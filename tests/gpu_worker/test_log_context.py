"""The log context travels with Dramatiq messages (gpu_worker/contract.py, gpu_worker/log_context.py): a
message sent while a request id is bound carries it, the worker binds it while the message runs (and only
then), the messages sent from there carry it on, and a message without one (an older sender) still runs."""

from __future__ import annotations

import json
import logging

import dramatiq
from dramatiq.brokers.stub import StubBroker

from gpu_worker.contract import (
    LOG_CONTEXT_OPTION,
    JsonLogFormatter,
    LogContextFilter,
    log_context,
    log_context_bind,
    log_context_reset,
)
from gpu_worker.log_context import LogContextMiddleware, install_log_context


def _broker_with_actors(seen: list):
    broker = StubBroker()
    broker.emit_after("process_boot")
    install_log_context(broker)
    install_log_context(broker)  # once only
    assert sum(isinstance(m, LogContextMiddleware) for m in broker.middleware) == 1

    @dramatiq.actor(broker=broker, queue_name="q", actor_name="second")
    def second() -> None:
        seen.append(("second", log_context()))

    @dramatiq.actor(broker=broker, queue_name="q", actor_name="first")
    def first() -> None:
        seen.append(("first", log_context()))
        token = log_context_bind(job_id="job-1")
        second.send()
        log_context_reset(token)

    return broker, first


def test_a_message_carries_the_context_it_was_sent_in_and_passes_it_on():
    seen: list = []
    broker, first = _broker_with_actors(seen)
    token = log_context_bind(request_id="req-42", user_id=7, operation="CreateGeneration")
    try:
        message = first.send()
    finally:
        log_context_reset(token)
    assert message.options[LOG_CONTEXT_OPTION] == {
        "request_id": "req-42",
        "user_id": "7",
        "operation": "CreateGeneration",
    }
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        broker.join("q")
        worker.join()
    finally:
        worker.stop()
    assert seen == [
        ("first", {"request_id": "req-42", "user_id": "7", "operation": "CreateGeneration"}),
        (
            "second",
            {"request_id": "req-42", "user_id": "7", "operation": "CreateGeneration", "job_id": "job-1"},
        ),
    ]
    assert log_context() == {}  # nothing leaked into the sender's context


def test_a_message_without_a_context_still_runs_with_an_empty_one():
    seen: list = []
    broker, _ = _broker_with_actors(seen)
    broker.enqueue(dramatiq.Message(queue_name="q", actor_name="second", args=(), kwargs={}, options={}))
    broker.enqueue(
        dramatiq.Message(
            queue_name="q", actor_name="second", args=(), kwargs={}, options={LOG_CONTEXT_OPTION: "garbage"}
        )
    )
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        broker.join("q")
        worker.join()
    finally:
        worker.stop()
    assert seen == [("second", {}), ("second", {})]


def test_json_records_carry_the_context():
    record = logging.LogRecord("gpu_worker.actors", logging.INFO, __file__, 1, "job %s done", ("g1",), None)
    token = log_context_bind(request_id="req-9", job_id="g1", unknown="dropped")
    try:
        LogContextFilter().filter(record)
    finally:
        log_context_reset(token)
    line = json.loads(JsonLogFormatter().format(record))
    assert {k: line[k] for k in ("level", "logger", "message", "request_id", "job_id")} == {
        "level": "INFO",
        "logger": "gpu_worker.actors",
        "message": "job g1 done",
        "request_id": "req-9",
        "job_id": "g1",
    }
    assert "unknown" not in line and line["time"].endswith("Z")
