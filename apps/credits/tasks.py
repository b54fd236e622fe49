import dramatiq
from django.contrib.auth import get_user_model

from apps.core.queues import QUEUE_DEFAULT

from .services import credits_grant


@dramatiq.actor(queue_name=QUEUE_DEFAULT, max_retries=5, min_backoff=1000)
def credits_grant_task(*, user_id: str, amount: int, reason: str, reference: str) -> None:
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:  # the account was deleted meanwhile
        return
    credits_grant(user=user, amount=amount, reason=reason, reference=reference)
