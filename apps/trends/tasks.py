import dramatiq

from apps.core.queues import QUEUE_MAINTENANCE

from . import rotation, services

ROTATE_ACTOR = "trends_rotate"
SOUND_DELETE_RETRY_MS = 10 * 60_000  # while a video being made still reads the sound


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


@dramatiq.actor(
    actor_name=services.SOUND_DELETE_ACTOR, queue_name=QUEUE_MAINTENANCE, max_retries=5, min_backoff=10_000
)
def trend_sound_delete_task(key: str) -> None:
    """Deletes a sound no trend uses any more (services.trend_sound_delete_unused); while a video being
    made still reads it, asks again later. Idempotent: a deleted key deletes nothing the second time."""
    if services.trend_sound_delete_unused(key=key) == "busy":
        trend_sound_delete_task.send_with_options(args=(key,), delay=SOUND_DELETE_RETRY_MS)
