"""Actors of the generations app (all on Django queues; the GPU actor lives only in gpu_worker).

- ACTOR_JOB_EVENT on QUEUE_JOB_EVENTS: the GPU workers' events (gpu_worker.contract.JobEvent).
- the watchdog of one attempt, and the sweep over all generations, on the maintenance queue.
"""

from __future__ import annotations

import logging

import dramatiq

from apps.core.queues import QUEUE_MAINTENANCE
from gpu_worker.contract import ACTOR_JOB_EVENT, QUEUE_JOB_EVENTS, ContractError

from . import services

logger = logging.getLogger(__name__)


@dramatiq.actor(
    actor_name=ACTOR_JOB_EVENT,
    queue_name=QUEUE_JOB_EVENTS,
    max_retries=20,
    min_backoff=200,
    max_backoff=60_000,
    time_limit=60_000,
)
def generation_job_event_task(event: dict) -> None:
    """One event of a GPU job. Idempotent: a redelivered or repeated event changes nothing. A database
    error raises, so Dramatiq retries it: a terminal event is never dropped that way."""
    try:
        result = services.generation_event_apply(message=event)
    except ContractError as exc:  # a message that breaks the contract is never going to work: drop it
        logger.error("dropping a job event that breaks the contract: %s (%r)", exc, event)
        return
    if result != "applied":
        logger.debug("job event %s of %s: %s", event.get("sequence"), event.get("job_id"), result)


@dramatiq.actor(queue_name=QUEUE_MAINTENANCE, max_retries=5, min_backoff=5_000, time_limit=60_000)
def generation_watchdog_task(generation_id: str, attempt: int) -> None:
    """Checks one attempt for a lost worker or an expired wait, then checks again later if needed."""
    delay = services.generation_watchdog(generation_id=generation_id, attempt=attempt)
    if delay is not None:
        generation_watchdog_task.send_with_options(
            args=(generation_id, attempt), delay=int(delay * 1000) + 500
        )


@dramatiq.actor(queue_name=QUEUE_MAINTENANCE, max_retries=3, min_backoff=10_000, time_limit=10 * 60_000)
def generations_reap_task() -> None:
    """A sweep over every stuck, expired or never-sent generation (`manage.py reap_generations`)."""
    changed = services.generations_reap()
    if changed:
        logger.warning("the generation reaper changed or re-sent %d generation(s)", changed)
