"""The one Dramatiq broker setup.

Embedded mode (no `REDIS_URL`): an in-process `StubBroker`; the ASGI server runs worker threads for the
Django queues (backend/embedded.py). Services mode: a `RedisBroker`; workers are separate processes
started with `python -m backend.worker` and an explicit queue list.

This module imports no app: `apps.core` calls `configure_broker` from its `AppConfig.ready`, before any
actor is declared, and must not pull the other apps in with it (the import-linter contracts).
"""

from __future__ import annotations

import dramatiq
from django.conf import settings
from django.db import close_old_connections, connections
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, Retries

from apps.core.metrics import DramatiqMetrics
from gpu_worker.contract import QUEUE_JOB_EVENTS
from gpu_worker.log_context import LogContextMiddleware


class DjangoDbConnectionsMiddleware(Middleware):
    """Closes stale database connections around each message, as Django does around a request."""

    def _close(self, *args, **kwargs) -> None:
        close_old_connections()

    before_process_message = _close
    after_process_message = _close
    after_skip_message = _close

    def before_worker_thread_shutdown(self, *args, **kwargs) -> None:
        connections.close_all()


class PromptEventsRedisBroker(RedisBroker):
    """A RedisBroker whose consumer of the GPU workers' job events polls at most every
    `JOB_EVENTS_POLL_MS` while idle. Redis consumers in Dramatiq poll with an exponential backoff up to the
    worker timeout (1 s): after a quiet moment a progress event waited up to a second before a backend
    worker fetched it (p99 about 250 ms from the GPU worker's emit to the websocket, bench/README.md).
    The other queues keep the worker timeout; an idle poll of this one is one Lua call to Redis."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000):
        if queue_name == QUEUE_JOB_EVENTS:
            timeout = min(timeout, settings.JOB_EVENTS_POLL_MS)
        return super().consume(queue_name, prefetch, timeout)


def build_broker(kind: str, redis_url: str = "") -> dramatiq.Broker:
    if kind == "redis":
        broker: dramatiq.Broker = PromptEventsRedisBroker(url=redis_url)
    elif kind == "stub":
        broker = StubBroker()
        broker.emit_after("process_boot")
    else:
        raise ValueError(f"unknown DRAMATIQ_BROKER {kind!r}; expected 'stub' or 'redis'")
    broker.add_middleware(DjangoDbConnectionsMiddleware())
    broker.add_middleware(LogContextMiddleware())
    # Before Retries in the list, so its after-hook runs once Retries has marked a message failed.
    broker.add_middleware(DramatiqMetrics(), before=Retries)
    return broker


def configure_broker() -> dramatiq.Broker:
    """Sets the global broker from settings. Called once from `apps.core` before any actor is declared."""
    broker = build_broker(settings.DRAMATIQ_BROKER, settings.REDIS_URL)
    dramatiq.set_broker(broker)
    return broker
