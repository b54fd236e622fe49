"""Prometheus metrics of the server and the backend workers (prometheus-client).

The server counts GraphQL operations by name and type, their latency, top-level errors by code
(graphql_schema/observability.py) and open websockets (backend/asgi.py); every Dramatiq process counts
messages by actor and outcome and their durations (`DramatiqMetrics`, added to the one broker in
backend/broker.py). The GPU workers' metrics live in gpu_worker/metrics.py (no Django there); in the
embedded mode they share this process, so the server's `/metrics` (backend/metrics.py) shows them too.

Multiprocess-safe: with PROMETHEUS_MULTIPROC_DIR set (several server or worker processes), samples go to
files in that folder and `exposition_registry` reads every process's; without it, this process's own. A
scrape reaches one process of several behind one port (`serve --web-processes N` sets the folder), so
per-process registries would answer with whichever process took the scrape. Counters of a process that
ended stay in the sums (they never go back); its live gauges (open websockets, messages in progress) must
go. prometheus-client's `mark_process_dead` drops them, called from gunicorn's child-exit hook in its docs;
uvicorn's supervisor has no such hook, so each scrape drops the live gauges of the folder's processes that
no longer exist (the folder is per host, like process ids).
"""

from __future__ import annotations

import glob
import os
import re
import threading
import time

import dramatiq
from dramatiq.middleware import Middleware
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
MESSAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

GRAPHQL_OPERATIONS = Counter(
    "graphql_operations", "GraphQL operations, by operation name and type", ["operation", "type"]
)
GRAPHQL_SECONDS = Histogram(
    "graphql_operation_seconds",
    "Seconds to answer a GraphQL query or mutation",
    ["operation", "type"],
    buckets=LATENCY_BUCKETS,
)
GRAPHQL_ERRORS = Counter("graphql_errors", "Top-level GraphQL errors, by extensions.code", ["code"])
WEBSOCKETS = Gauge("websocket_connections", "Open websocket connections", multiprocess_mode="livesum")

DRAMATIQ_MESSAGES = Counter(
    "dramatiq_messages", "Dramatiq messages processed, by actor and outcome", ["actor", "outcome"]
)
DRAMATIQ_SECONDS = Histogram(
    "dramatiq_message_seconds", "Seconds to process a Dramatiq message", ["actor"], buckets=MESSAGE_BUCKETS
)
DRAMATIQ_IN_PROGRESS = Gauge(
    "dramatiq_messages_in_progress", "Messages being processed now", ["actor"], multiprocess_mode="livesum"
)

# Operation names are chosen by clients: a label per name would let anyone grow the series without end.
# The first names seen (well-formed ones) keep their own label; the rest count as "other".
MAX_OPERATION_NAMES = 200
_OPERATION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_operation_names: set[str] = set()
_operation_names_lock = threading.Lock()


def operation_label(name: str | None) -> str:
    if not name:
        return "anonymous"
    if name in _operation_names:
        return name
    if not _OPERATION_NAME.match(name):
        return "other"
    with _operation_names_lock:
        if len(_operation_names) >= MAX_OPERATION_NAMES:
            return "other"
        _operation_names.add(name)
    return name


class DramatiqMetrics(Middleware):
    """Messages by actor and outcome (done, retried, failed, skipped) and their durations."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def before_process_message(self, broker: dramatiq.Broker, message) -> None:
        self._started[message.message_id] = time.perf_counter()
        DRAMATIQ_IN_PROGRESS.labels(actor=message.actor_name).inc()

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        started = self._started.pop(message.message_id, None)
        if started is None:
            return
        DRAMATIQ_IN_PROGRESS.labels(actor=message.actor_name).dec()
        DRAMATIQ_SECONDS.labels(actor=message.actor_name).observe(time.perf_counter() - started)
        if exception is None:
            outcome = "done"
        elif message.failed:
            outcome = "failed"  # out of retries, or an exception the actor throws on purpose
        else:
            outcome = "retried"
        DRAMATIQ_MESSAGES.labels(actor=message.actor_name, outcome=outcome).inc()

    def after_skip_message(self, broker: dramatiq.Broker, message) -> None:
        if self._started.pop(message.message_id, None) is not None:
            DRAMATIQ_IN_PROGRESS.labels(actor=message.actor_name).dec()
        DRAMATIQ_MESSAGES.labels(actor=message.actor_name, outcome="skipped").inc()


def exposition_registry() -> CollectorRegistry:
    """What this process serves: every process's samples with PROMETHEUS_MULTIPROC_DIR, else its own."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return REGISTRY
    registry = CollectorRegistry()
    registry.register(_EveryProcessCollector(path))
    return registry


class _EveryProcessCollector(MultiProcessCollector):
    """prometheus-client's sum of the folder's files, without the live gauges of ended processes."""

    def __init__(self, path: str) -> None:
        super().__init__(None, path=path)
        self.folder = path

    def collect(self):
        forget_ended_processes(self.folder)
        return super().collect()


_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def forget_ended_processes(path: str) -> list[int]:
    """Drops the live gauges of processes that have ended (their files in `path`); returns their ids."""
    ended = set()
    for name in map(os.path.basename, glob.glob(os.path.join(path, "gauge_live*_*.db"))):
        match = _LIVE_GAUGE_FILE.match(name)
        if match and not _process_exists(int(match.group(1))):
            ended.add(int(match.group(1)))
    for pid in ended:
        mark_process_dead(pid, path)
    return sorted(ended)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
