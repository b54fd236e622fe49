"""Actors of the generations app on Django queues (the GPU job's actors are in apps/jobs/tasks.py)."""

from __future__ import annotations

import logging

import dramatiq

from apps.core.queues import QUEUE_MAINTENANCE

from . import retention

logger = logging.getLogger(__name__)


@dramatiq.actor(queue_name=QUEUE_MAINTENANCE, max_retries=3, min_backoff=60_000, time_limit=30 * 60_000)
def generations_purge_task() -> None:
    """The retention purge of selfies and (when a term is set) videos; run daily by the scheduler."""
    records = retention.generations_purge_expired()
    if records:
        logger.info("retention purge deleted %d generation input(s)/output(s)", len(records))
