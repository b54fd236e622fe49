"""What the metrics and the log context cost, in process (no server): microseconds per GraphQL operation
for the OperationObserver extension, per Dramatiq message for the two middlewares, per JSON log line, and
per `/metrics` exposition.

    DJANGO_SETTINGS_MODULE=backend.settings .venv/bin/python bench/observability.py

Each figure is the median of 5 runs of BENCH_N (default 20000) calls on this machine; compare it with a
request's total (bench/http_me.py) to judge the overhead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")

import django  # noqa: E402

django.setup()

import dramatiq  # noqa: E402
from graphql import OperationType  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402

from apps.core.metrics import DramatiqMetrics, exposition_registry  # noqa: E402
from gpu_worker.contract import JsonLogFormatter, LogContextFilter, log_context_bind, log_context_reset  # noqa: E402
from gpu_worker.log_context import LogContextMiddleware  # noqa: E402
from graphql_schema.observability import OperationObserver  # noqa: E402

N = int(os.environ.get("BENCH_N", 20000))


def per_call_us(fn, n: int = N) -> float:
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(runs)


def one_operation() -> None:
    context = SimpleNamespace(
        context=SimpleNamespace(user=SimpleNamespace(pk=42)),
        operation_name="CreateGeneration",
        operation_type=OperationType.MUTATION,
        result=SimpleNamespace(errors=None),
    )
    observer = OperationObserver()
    observer.execution_context = context
    operation = observer.on_operation()
    next(operation)
    execute = observer.on_execute()
    next(execute)
    for hook in (execute, operation):
        with contextlib.suppress(StopIteration):
            next(hook)


broker = dramatiq.get_broker()
message = dramatiq.Message(queue_name="default", actor_name="bench", args=(), kwargs={}, options={})
logs, metrics = LogContextMiddleware(), DramatiqMetrics()


def one_message() -> None:
    message.options.pop("log_context", None)
    logs.before_enqueue(broker, message, 0)
    metrics.before_process_message(broker, message)
    logs.before_process_message(broker, message)
    logs.after_process_message(broker, message)
    metrics.after_process_message(broker, message)


record = logging.LogRecord(
    "apps.jobs.tasks", logging.INFO, __file__, 1, "generation job %s completed", ("g1",), None
)
formatter, context_filter = JsonLogFormatter(), LogContextFilter()


def one_log_line() -> None:
    context_filter.filter(record)
    formatter.format(record)


token = log_context_bind(request_id="0" * 32, user_id=42, operation="CreateGeneration", job_id="g1")
print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; N={N}")
print(f"GraphQL operation (OperationObserver):    {per_call_us(one_operation):7.2f} us")
print(f"Dramatiq message (log context + metrics): {per_call_us(one_message):7.2f} us")
print(f"JSON log line (filter + format):          {per_call_us(one_log_line):7.2f} us")
print(
    f"/metrics exposition ({len(generate_latest(exposition_registry()))} bytes):  "
    f"{per_call_us(lambda: generate_latest(exposition_registry()), n=200):7.0f} us"
)
log_context_reset(token)
