import dramatiq

from apps.core.queues import QUEUE_MAINTENANCE, QUEUE_WEBHOOKS

from .webhooks import WEBHOOK_DELIVER_ACTOR, webhook_deliver, webhook_deliveries_resend_lost


@dramatiq.actor(
    actor_name=WEBHOOK_DELIVER_ACTOR,
    queue_name=QUEUE_WEBHOOKS,
    # The delivery row counts attempts against WEBHOOKS_RETRY_DELAYS_SECONDS; Dramatiq's own retries only
    # cover a database outage out of the service (with its own backoff).
    max_retries=20,
    min_backoff=1_000,
    max_backoff=10 * 60_000,
    time_limit=2 * 60_000,  # far above one POST (WEBHOOKS_TIMEOUT_SECONDS)
)
def webhook_deliver_task(*, delivery_id: str) -> None:
    """One attempt of one webhook delivery; the next one is a new message after its delay, so a slow or
    failing endpoint never holds a worker thread while it waits."""
    delay = webhook_deliver(delivery_id=delivery_id)
    if delay is not None:
        dramatiq.get_broker().get_actor(WEBHOOK_DELIVER_ACTOR).send_with_options(
            kwargs={"delivery_id": delivery_id}, delay=max(int(delay * 1000), 1)
        )


@dramatiq.actor(queue_name=QUEUE_MAINTENANCE, max_retries=0)
def webhooks_resend_lost_task() -> None:
    """The scheduler's sweep (apps/trends/scheduler.py): deliveries whose message was lost go again."""
    webhook_deliveries_resend_lost()
