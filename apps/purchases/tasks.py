"""Backend actors of purchases: Google Play acknowledgements, retried until the store takes them."""

from __future__ import annotations

from datetime import timedelta

import dramatiq
from django.utils import timezone

from apps.core.queues import QUEUE_DEFAULT, QUEUE_MAINTENANCE

from .services import ACKNOWLEDGE_ACTOR, purchase_acknowledge


# Google refunds a purchase that is not acknowledged within three days: retry for about a day with
# backoff (a store outage), then the sweep below picks it up again.
@dramatiq.actor(
    actor_name=ACKNOWLEDGE_ACTOR,
    queue_name=QUEUE_DEFAULT,
    max_retries=20,
    min_backoff=5_000,
    max_backoff=3_600_000,
)
def purchase_acknowledge_task(*, purchase_id: str) -> None:
    purchase_acknowledge(purchase_id=purchase_id)


@dramatiq.actor(queue_name=QUEUE_MAINTENANCE, max_retries=0)
def purchases_acknowledge_sweep_task() -> None:
    purchases_acknowledge_sweep()


def purchases_acknowledge_sweep(*, older_than: timedelta = timedelta(minutes=10)) -> int:
    """Sends the acknowledgement again for every Play purchase still unacknowledged (run by the scheduler)."""
    from .models import Purchase
    from .stores import Environment

    due = (
        Purchase.objects.filter(
            platform="ANDROID", acknowledged_at__isnull=True, created_at__lt=timezone.now() - older_than
        )
        .exclude(environment=Environment.LOCAL)
        .values_list("pk", flat=True)[:500]
    )
    count = 0
    for purchase_id in due:
        purchase_acknowledge_task.send(purchase_id=str(purchase_id))
        count += 1
    return count
