"""Actors of the Soul ID app, on Django queues (never a GPU lane)."""

from __future__ import annotations

import logging

import dramatiq

from apps.core.queues import QUEUE_DEFAULT, QUEUE_MAINTENANCE

from . import erasure, photos

logger = logging.getLogger(__name__)


@dramatiq.actor(
    actor_name=photos.PHOTO_CHECK_ACTOR,
    queue_name=QUEUE_DEFAULT,
    max_retries=3,
    min_backoff=1_000,
    time_limit=120_000,
)
def character_photo_check_task(photo_id: str) -> None:
    """Checks one selfie of a Soul ID (idempotent: a checked or removed photo is left alone)."""
    result = photos.character_photo_check(photo_id=photo_id)
    logger.info("Soul ID photo %s: %s", photo_id, result)


@dramatiq.actor(
    actor_name=erasure.ERASE_ACTOR,
    queue_name=QUEUE_DEFAULT,
    max_retries=10,
    min_backoff=5_000,
    time_limit=600_000,
)
def character_erase_task(erasure_id: str) -> None:
    """Erases one Soul ID; a failure is recorded on the ErasureRecord and retried."""
    erasure.character_erase(erasure_id=erasure_id, job=f"{character_erase_task.actor_name}:{erasure_id}")


@dramatiq.actor(queue_name=QUEUE_MAINTENANCE, max_retries=3, min_backoff=60_000, time_limit=30 * 60_000)
def characters_purge_task() -> None:
    """The retention purge (run it daily from the scheduler): erases Soul IDs unused for too long."""
    records = erasure.characters_purge_expired()
    if records:
        logger.info("retention purge erased %d Soul ID(s)", len(records))
