"""Enqueues the trend rotation every `TRENDS_ROTATION_INTERVAL_SECONDS`, from any number of processes.

Time is cut into slots of one interval. Each scheduler, at each slot, tries to claim the slot with an
atomic add in the shared cache (`SET NX` in Redis); only the one that claims it sends the message. So with
several servers, each running a scheduler, the job is enqueued once per slot. If a claim is ever lost
(cache evicted, Redis restarted), the worst case is a second run in the same slot, which the job's
compare-and-set updates make harmless.

Embedded mode: a daemon thread started next to the embedded worker (`backend/broker.py`).
Services mode: `python -m apps.trends.scheduler`, started by `manage.py serve` next to the backend worker.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

logger = logging.getLogger(__name__)

_thread: threading.Thread | None = None
_stop = threading.Event()
_lock = threading.Lock()


def slot_key(slot: int) -> str:
    return f"trends:rotation:slot:{slot}"


def tick(now: float | None = None) -> bool:
    """Sends the rotation message if this process claims the current slot. True when it did."""
    from django.conf import settings
    from django.core.cache import cache

    from .tasks import trends_rotate_task

    interval = settings.TRENDS_ROTATION_INTERVAL_SECONDS
    now = time.time() if now is None else now
    slot = int(now // interval)
    if not cache.add(slot_key(slot), os.getpid(), timeout=interval * 2):
        return False
    trends_rotate_task.send()
    logger.info("trend rotation enqueued for slot %s", slot)
    return True


def run(stop: threading.Event) -> None:
    """Ticks at the start of every slot until `stop` is set. Survives errors (Redis down, say)."""
    from django.conf import settings

    while not stop.is_set():
        try:
            tick()
        except Exception:
            logger.exception("the trend rotation scheduler could not enqueue")
        interval = settings.TRENDS_ROTATION_INTERVAL_SECONDS
        stop.wait(interval - (time.time() % interval) + 0.05)


def start_scheduler() -> threading.Thread | None:
    """Starts the scheduler thread in this process once (embedded mode). None when turned off."""
    global _thread
    from django.conf import settings

    if not settings.TRENDS_SCHEDULER_ENABLED:
        return None
    with _lock:
        if _thread is None or not _thread.is_alive():
            _stop.clear()
            _thread = threading.Thread(target=run, args=(_stop,), name="trends-scheduler", daemon=True)
            _thread.start()
            logger.info(
                "trend rotation scheduler started (every %s s)", settings.TRENDS_ROTATION_INTERVAL_SECONDS
            )
        return _thread


def stop_scheduler() -> None:
    global _thread
    with _lock:
        _stop.set()
        if _thread is not None:
            _thread.join(timeout=5)
            _thread = None


def main() -> int:
    """`python -m apps.trends.scheduler`: the scheduler as its own process (services mode)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    import django

    django.setup()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    logger.info("trend rotation scheduler process started")
    run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
