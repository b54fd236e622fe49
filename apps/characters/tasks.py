"""Actors of the Soul ID app, on Django queues (never a GPU lane)."""

from __future__ import annotations

import logging

import dramatiq

from apps.core.queues import QUEUE_DEFAULT, QUEUE_MAINTENANCE
from gpu_worker.contract import ACTOR_TRAINING_EVENT, QUEUE_JOB_EVENTS, ContractError

from . import services

logger = logging.getLogger(__name__)


@dramatiq.actor(queue_name=QUEUE_DEFAULT, max_retries=3, min_backoff=1_000, time_limit=2 * 60_000)
def character_photo_check_task(photo_id: str) -> None:
    """Checks one selfie of a Soul ID (idempotent: a checked or removed photo is left alone)."""
    result = services.character_photo_check(photo_id=photo_id)
    logger.info("Soul ID photo %s: %s", photo_id, result)


@dramatiq.actor(queue_name=QUEUE_DEFAULT, max_retries=10, min_backoff=5_000, time_limit=10 * 60_000)
def character_erase_task(erasure_id: str) -> None:
    """Erases one Soul ID; a failure is recorded on the ErasureRecord and retried."""
    services.character_erase(erasure_id=erasure_id, job=f"{character_erase_task.actor_name}:{erasure_id}")


@dramatiq.actor(
    actor_name=ACTOR_TRAINING_EVENT,
    queue_name=QUEUE_JOB_EVENTS,
    max_retries=20,
    min_backoff=200,
    max_backoff=60_000,
    time_limit=60_000,
)
def character_training_event_task(event: dict) -> None:
    """One event of a training job from a GPU worker (idempotent). A database error raises, so Dramatiq
    retries it: a terminal event is never dropped that way."""
    try:
        result = services.character_training_event_apply(message=event)
    except ContractError as exc:  # a message that breaks the contract is never going to work: drop it
        logger.error("dropping a training event that breaks the contract: %s (%r)", exc, event)
        return
    logger.debug("training event %s of %s: %s", event.get("sequence"), event.get("job_id"), result)


@dramatiq.actor(queue_name=QUEUE_MAINTENANCE, max_retries=3, min_backoff=60_000, time_limit=30 * 60_000)
def characters_purge_task() -> None:
    """The retention purge (run it daily from the scheduler): erases Soul IDs unused for too long."""
    records = services.characters_purge_expired()
    if records:
        logger.info("retention purge erased %d Soul ID(s)", len(records))
