"""The only sender of GPU jobs, and the cancel flags the GPU workers read.

Every kind of GPU job (a generation, a Soul ID training, the next kinds) is sent here, after the database
commit (`transaction.on_commit`), never inside the atomic block. A job travels as the Dramatiq message
that its contract builder (`gpu_worker.contract.*_message_fields`) describes; the actors themselves live
only in the GPU worker processes, so nothing here declares them.

Routes held: `route_held(name)` reads whether a GPU worker advertises a route's model as loaded
(`gpu_worker.contract.route_held_key`), so a job can go to that route's queue.

Cancel flags: `cancel_key(job_id)` set in the broker's Redis (what `python -m gpu_worker` reads), or, with
the in-process StubBroker of the embedded mode, in this process's cache (what `embedded_cancel_requested`
reads for the embedded GPU lanes).
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from django.core.cache import cache

from gpu_worker.contract import (
    CANCEL_FLAG_TTL_SECONDS,
    cancel_key,
    log_context_bind,
    log_context_reset,
    route_held_key,
)

logger = logging.getLogger(__name__)


def job_send(*, fields: dict[str, Any], job_id: str, attempt: int, delay_seconds: float = 0) -> str:
    """Queues one job message (`dramatiq.Message(**fields)`), after `delay_seconds` (a retry's backoff).
    Returns the message id."""
    broker = dramatiq.get_broker()
    broker.declare_queue(fields["queue_name"])  # the StubBroker refuses unknown queues; Redis needs none
    message = dramatiq.Message(**fields)
    delay_ms = int(delay_seconds * 1000)
    context = log_context_bind(job_id=job_id)  # the message carries it (backend/broker.py)
    try:
        broker.enqueue(message, delay=delay_ms if delay_ms > 0 else None)
    finally:
        log_context_reset(context)
    logger.info(
        "%s job %s attempt %s queued on %s%s",
        fields["actor_name"],
        job_id,
        attempt,
        fields["queue_name"],
        f" in {delay_ms} ms" if delay_ms > 0 else "",
    )
    return message.message_id


def _redis_client():
    return getattr(dramatiq.get_broker(), "client", None)


def cancel_flag_set(job_id: str) -> None:
    """Tells the GPU workers to stop `job_id` (at the next step, or before it starts)."""
    client = _redis_client()
    if client is not None:
        client.set(cancel_key(job_id), "1", ex=CANCEL_FLAG_TTL_SECONDS)
    else:
        cache.set(cancel_key(job_id), True, CANCEL_FLAG_TTL_SECONDS)


def cancel_flag_clear(job_id: str) -> None:
    """Lets `job_id` run again (a new attempt of a job that was stopped)."""
    client = _redis_client()
    if client is not None:
        client.delete(cancel_key(job_id))
    else:
        cache.delete(cancel_key(job_id))


def cancel_flag_is_set(job_id: str) -> bool:
    client = _redis_client()
    if client is not None:
        return bool(client.exists(cancel_key(job_id)))
    return cache.get(cancel_key(job_id)) is not None


def route_held(route_name: str) -> bool:
    """Whether some GPU worker advertises that it holds `route_name` loaded (gpu_worker/routes_held.py):
    then a job on that route goes to the route's queue. False with the StubBroker (the embedded lanes
    consume only the plain lanes) and when Redis cannot say (the plain lane is always served)."""
    client = _redis_client()
    if client is None:
        return False
    try:
        return bool(client.exists(route_held_key(route_name)))
    except Exception:
        logger.warning(
            "could not read whether route %s is held; using the plain lane", route_name, exc_info=True
        )
        return False


def embedded_cancel_requested(job_id: str) -> bool:
    """The cancel checker of the GPU lanes run inside this process (backend/broker.py)."""
    return cancel_flag_is_set(job_id)
