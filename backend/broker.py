"""The one Dramatiq broker setup.

Embedded mode (no `REDIS_URL`): an in-process `StubBroker`; the ASGI server runs worker threads for the
Django queues (`start_embedded_worker`). Services mode: a `RedisBroker`; workers are separate processes
started with `python -m backend.worker` and an explicit queue list.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_embedded_worker: dramatiq.Worker | None = None
_embedded_gpu_worker: dramatiq.Worker | None = None


class DjangoDbConnectionsMiddleware(Middleware):
    """Closes stale database connections around each message, as Django does around a request."""

    def _close(self, *args, **kwargs) -> None:
        from django.db import close_old_connections

        close_old_connections()

    before_process_message = _close
    after_process_message = _close
    after_skip_message = _close

    def before_worker_thread_shutdown(self, *args, **kwargs) -> None:
        from django.db import connections

        connections.close_all()


def build_broker(kind: str, redis_url: str = "") -> dramatiq.Broker:
    if kind == "redis":
        from dramatiq.brokers.redis import RedisBroker

        broker: dramatiq.Broker = RedisBroker(url=redis_url)
    elif kind == "stub":
        broker = StubBroker()
        broker.emit_after("process_boot")
    else:
        raise ValueError(f"unknown DRAMATIQ_BROKER {kind!r}; expected 'stub' or 'redis'")
    broker.add_middleware(DjangoDbConnectionsMiddleware())
    return broker


def configure_broker() -> dramatiq.Broker:
    """Sets the global broker from settings. Called once from `apps.core` before any actor is declared."""
    from django.conf import settings

    broker = build_broker(settings.DRAMATIQ_BROKER, settings.REDIS_URL)
    dramatiq.set_broker(broker)
    return broker


def start_embedded_worker() -> dramatiq.Worker | None:
    """Starts worker threads for the Django queues inside this process (embedded mode)."""
    global _embedded_worker
    from django.conf import settings

    from apps.core.queues import DJANGO_QUEUES

    with _lock:
        if _embedded_worker is not None:
            return _embedded_worker
        broker = dramatiq.get_broker()
        for queue in DJANGO_QUEUES:
            broker.declare_queue(queue)
        worker = dramatiq.Worker(
            broker, queues=set(DJANGO_QUEUES), worker_threads=settings.DRAMATIQ_WORKER_THREADS
        )
        worker.start()
        _embedded_worker = worker
        logger.info("embedded dramatiq worker started on queues %s", ", ".join(DJANGO_QUEUES))
        if settings.EMBEDDED_GPU_WORKER:
            start_embedded_gpu_worker()
        from apps.trends.scheduler import start_scheduler  # periodic jobs (trend rotation), once per process

        start_scheduler()
        return worker


def _gpu_storage():
    """The GPU lanes' view of the configured storage (gpu_worker.storage: no Django inside)."""
    from django.conf import settings

    from gpu_worker.storage import storage_from_env

    return storage_from_env(
        {
            "STORAGE_BACKEND": settings.STORAGE_BACKEND,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "S3_BUCKET": settings.S3_BUCKET,
            "S3_ENDPOINT_URL": settings.S3_ENDPOINT_URL or "",
            "S3_REGION": settings.S3_REGION,
        }
    )


def start_embedded_gpu_worker() -> dramatiq.Worker:
    """Runs the GPU lanes inside this process (tiny-wan on the CPU) on the configured broker.

    The one place Django-side code starts GPU code: `gpu_worker.actors` declares its actor on the broker
    it is given and consumes only the GPU lanes; the Django worker above never consumes them.
    """
    global _embedded_gpu_worker
    from django.conf import settings

    from apps.jobs.dispatch import embedded_cancel_requested
    from gpu_worker.actors import start_embedded

    if _embedded_gpu_worker is None:
        _embedded_gpu_worker = start_embedded(
            dramatiq.get_broker(),
            storage=_gpu_storage(),
            cancel_checker=embedded_cancel_requested,
            model_root=settings.MODEL_ROOT,
        )
    return _embedded_gpu_worker


def stop_embedded_worker() -> None:
    global _embedded_worker, _embedded_gpu_worker
    with _lock:
        if _embedded_gpu_worker is not None:
            _embedded_gpu_worker.stop(timeout=5000)
            _embedded_gpu_worker = None
        if _embedded_worker is not None:
            _embedded_worker.stop(timeout=5000)
            _embedded_worker = None


def embedded_worker_running() -> bool:
    worker = _embedded_worker
    return worker is not None and any(thread.is_alive() for thread in worker.workers)
