import dramatiq

from apps.core.queues import QUEUE_PUSH

from .delivery import MAX_ATTEMPTS_CEILING, push_message_deliver

PUSH_DELIVER_ACTOR = "push_deliver"


@dramatiq.actor(
    actor_name=PUSH_DELIVER_ACTOR,
    queue_name=QUEUE_PUSH,
    # The row counts attempts and stops at PUSH_MAX_ATTEMPTS; Dramatiq's budget only has to be larger. It
    # also covers a database outage (an exception out of the service), retried with its own backoff.
    max_retries=MAX_ATTEMPTS_CEILING,
    min_backoff=1_000,
    max_backoff=5 * 60_000,
    time_limit=5 * 60_000,  # far above one FCM call (10 s timeout, firebase-admin's own retries)
)
def push_deliver_task(*, push_id: str) -> None:
    """Delivers one push message (idempotent: a finished message is left alone)."""
    delay_ms = push_message_deliver(push_id=push_id)
    if delay_ms is not None:
        raise dramatiq.Retry(f"push {push_id}: next attempt in {delay_ms} ms", delay=delay_ms)
