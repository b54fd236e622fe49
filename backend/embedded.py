"""Embedded mode: the workers that run inside the server process (no `REDIS_URL`).

The ASGI lifespan (backend/asgi.py) starts worker threads for the Django queues, the periodic job
scheduler and, with `EMBEDDED_GPU_WORKER`, the GPU lanes (tiny-wan on the CPU) on the in-process broker.
This is the project layer, so it may import any app; the broker itself is set up in backend/broker.py.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from django.conf import settings

from apps.core.queues import DJANGO_QUEUES
from apps.jobs.dispatch import embedded_cancel_requested
from apps.trends.scheduler import start_scheduler
from gpu_worker.storage import storage_from_env

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_embedded_worker: dramatiq.Worker | None = None
_embedded_gpu_worker: dramatiq.Worker | None = None


def start_embedded_worker() -> dramatiq.Worker | None:
    """Starts worker threads for the Django queues inside this process (embedded mode)."""
    global _embedded_worker
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
        start_scheduler()  # the periodic jobs (trend rotation, purge, reaper), once per process
        return worker


def _gpu_storage():
    """The GPU lanes' view of the configured storage (gpu_worker.storage: no Django inside)."""
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
    # Imported here, not at the top: gpu_worker.actors loads torch and the pipelines, which a server
    # without EMBEDDED_GPU_WORKER never needs (not a cycle: gpu_worker imports nothing of ours).
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
