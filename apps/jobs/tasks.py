"""The actors of the one job lifecycle, on Django queues (the GPU actors live only in gpu_worker).

- ACTOR_JOB_EVENT on QUEUE_JOB_EVENTS: every GPU worker event, routed by its job type to its kind;
- the watchdog of one attempt of any kind, and the sweep over all kinds, on the maintenance queue.
"""

from __future__ import annotations

import logging

import dramatiq

from apps.core.queues import QUEUE_MAINTENANCE
from gpu_worker.contract import ACTOR_JOB_EVENT, QUEUE_JOB_EVENTS, ContractError

from . import lifecycle

logger = logging.getLogger(__name__)


@dramatiq.actor(
    actor_name=ACTOR_JOB_EVENT,
    queue_name=QUEUE_JOB_EVENTS,
    max_retries=20,
    min_backoff=200,
    max_backoff=60_000,
    time_limit=60_000,
)
def job_event_task(event: dict) -> None:
    """One event of a GPU job. Idempotent: a redelivered or repeated event changes nothing. A database
    error raises, so Dramatiq retries it: a terminal event is never dropped that way."""
    try:
        result = lifecycle.job_event_apply(message=event)
    except ContractError as exc:  # a message that breaks the contract is never going to work: drop it
        logger.error("dropping a job event that breaks the contract: %s (%r)", exc, event)
        return
    if result != "applied":
        logger.debug("job event %s of %s: %s", event.get("sequence"), event.get("job_id"), result)
    elif event.get("kind") in ("completed", "failed"):  # one line per attempt's end, with its log context
        logger.info(
            "%s job %s attempt %s %s%s",
            event.get("job_type"),
            event.get("job_id"),
            event.get("attempt"),
            event.get("kind"),
            f": {event.get('reason_code')}" if event.get("reason_code") else "",
        )


@dramatiq.actor(
    actor_name=lifecycle.WATCHDOG_ACTOR,
    queue_name=QUEUE_MAINTENANCE,
    max_retries=5,
    min_backoff=5_000,
    time_limit=60_000,
)
def job_watchdog_task(job_type: str, job_id: str, attempt: int) -> None:
    """Checks one attempt for a lost worker or an expired wait, then checks again later if needed."""
    delay = lifecycle.job_watchdog(job_type=job_type, job_id=job_id, attempt=attempt)
    if delay is not None:
        lifecycle.job_watchdog_again(job_type=job_type, job_id=job_id, attempt=attempt, delay_seconds=delay)


@dramatiq.actor(queue_name=QUEUE_MAINTENANCE, max_retries=3, min_backoff=10_000, time_limit=10 * 60_000)
def jobs_reap_task() -> None:
    """A sweep over every stuck, expired or never-sent job of every kind (`manage.py reap_jobs`)."""
    changed = lifecycle.jobs_reap()
    if changed:
        logger.warning("the job reaper changed or re-sent %d job(s)", changed)
