"""Enqueues the periodic jobs (`JOBS`), each every its own interval, from any number of processes.

The jobs: the trend rotation (every `TRENDS_ROTATION_INTERVAL_SECONDS`), the Soul ID retention purge
(`CHARACTERS_PURGE_INTERVAL_SECONDS`, daily by default), the generations' retention purge of selfies and
videos (`GENERATIONS_PURGE_INTERVAL_SECONDS`, daily) and the generation reaper sweep
(`GENERATIONS_REAP_INTERVAL_SECONDS`, 10 minutes by default), the Play acknowledgement sweep
(`PURCHASES_ACKNOWLEDGE_SWEEP_INTERVAL_SECONDS`) and the sweep of webhook deliveries whose message was
lost (`WEBHOOKS_RESEND_INTERVAL_SECONDS`, 5 minutes). An interval of 0 turns a job off.

Time is cut into slots of one interval per job. Each scheduler, at each slot, tries to claim the job's slot
with an atomic add in the shared cache (`SET NX` in Redis); only the one that claims it sends the message.
So with several servers, each running a scheduler, each job is enqueued once per slot. If a claim is ever
lost (cache evicted, Redis restarted), the worst case is a second run in the same slot, which every job
tolerates (compare-and-set updates, idempotent sweeps).

Embedded mode: a daemon thread started next to the embedded worker (`backend/embedded.py`).
Services mode: `python -m apps.trends.scheduler`, started by `manage.py serve` next to the backend worker.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from importlib import import_module

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicJob:
    name: str  # also the slot key's prefix
    actor: str  # "module:attribute" of a Dramatiq actor that takes no arguments
    interval_setting: str
    default_interval: int

    def interval(self) -> int:
        from django.conf import settings

        return int(getattr(settings, self.interval_setting, self.default_interval))

    def slot_key(self, slot: int) -> str:
        return f"{self.name}:slot:{slot}"

    def send(self) -> None:
        module, attribute = self.actor.split(":")
        getattr(import_module(module), attribute).send()


ROTATION = PeriodicJob(
    "trends:rotation", "apps.trends.tasks:trends_rotate_task", "TRENDS_ROTATION_INTERVAL_SECONDS", 300
)
JOBS: tuple[PeriodicJob, ...] = (
    ROTATION,
    PeriodicJob(
        "characters:purge",
        "apps.characters.tasks:characters_purge_task",
        "CHARACTERS_PURGE_INTERVAL_SECONDS",
        86_400,
    ),
    PeriodicJob(
        "generations:purge",
        "apps.generations.tasks:generations_purge_task",
        "GENERATIONS_PURGE_INTERVAL_SECONDS",
        86_400,
    ),
    PeriodicJob(
        "jobs:reap",
        "apps.jobs.tasks:jobs_reap_task",
        "GENERATIONS_REAP_INTERVAL_SECONDS",
        600,
    ),
    PeriodicJob(
        "purchases:acknowledge",
        "apps.purchases.tasks:purchases_acknowledge_sweep_task",
        "PURCHASES_ACKNOWLEDGE_SWEEP_INTERVAL_SECONDS",
        3600,
    ),
    PeriodicJob(
        "webhooks:resend",
        "apps.organizations.tasks:webhooks_resend_lost_task",
        "WEBHOOKS_RESEND_INTERVAL_SECONDS",
        300,
    ),
)

_thread: threading.Thread | None = None
_stop = threading.Event()
_lock = threading.Lock()


def slot_key(slot: int) -> str:
    return ROTATION.slot_key(slot)


def tick_job(job: PeriodicJob, now: float | None = None) -> bool:
    """Sends the job's message if this process claims the job's current slot. True when it did."""
    from django.core.cache import cache

    interval = job.interval()
    if interval <= 0:
        return False
    now = time.time() if now is None else now
    slot = int(now // interval)
    if not cache.add(job.slot_key(slot), os.getpid(), timeout=interval * 2):
        return False
    job.send()
    if job is ROTATION:
        logger.info("trend rotation enqueued for slot %s", slot)
    else:
        logger.info("%s enqueued for slot %s", job.name, slot)
    return True


def tick(now: float | None = None) -> bool:
    """Sends the rotation message if this process claims the current slot. True when it did."""
    return tick_job(ROTATION, now)


def tick_all(now: float | None = None) -> dict[str, bool]:
    """Ticks every job; one job's failure does not keep the others from being enqueued."""
    sent = {}
    for job in JOBS:
        try:
            sent[job.name] = tick_job(job, now)
        except Exception:
            logger.exception("the scheduler could not enqueue %s", job.name)
            sent[job.name] = False
    return sent


def seconds_to_next_slot(now: float | None = None) -> float:
    """Seconds until the soonest slot boundary of any job that is on (60 s when none is)."""
    now = time.time() if now is None else now
    intervals = [interval for interval in (job.interval() for job in JOBS) if interval > 0]
    return min((interval - now % interval for interval in intervals), default=60.0)


def run(stop: threading.Event) -> None:
    """Ticks at the start of every slot until `stop` is set. Survives errors (Redis down, say)."""
    while not stop.is_set():
        tick_all()
        stop.wait(seconds_to_next_slot() + 0.05)


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
                "periodic job scheduler started (%s)",
                ", ".join(f"{job.name} every {job.interval()} s" for job in JOBS),
            )
        return _thread


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
