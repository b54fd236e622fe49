import dramatiq

from apps.core.queues import QUEUE_MAINTENANCE

from . import rotation

ROTATE_ACTOR = "trends_rotate"


@dramatiq.actor(
    actor_name=ROTATE_ACTOR,
    queue_name=QUEUE_MAINTENANCE,
    max_retries=3,
    min_backoff=10_000,
    time_limit=15 * 60_000,
)
def trends_rotate_task() -> None:
    """The periodic rotation (enqueued by apps.trends.scheduler). Idempotent, so a redelivery is harmless."""
    rotation.trends_rotate()
