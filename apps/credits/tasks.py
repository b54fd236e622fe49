"""The credits actor, and the one function that sends it (after the commit, by id).

`credits_schedule_grant` lives here, beside its actor, rather than in services.py: the actor calls the
service, so a service that sent the actor would make services and tasks import each other.
"""

import dramatiq
from django.contrib.auth import get_user_model
from django.db import transaction

from apps.core.errors import ValidationFailed
from apps.core.queues import QUEUE_DEFAULT

from .services import credits_grant


@dramatiq.actor(queue_name=QUEUE_DEFAULT, max_retries=5, min_backoff=1000)
def credits_grant_task(*, user_id: str, amount: int, reason: str, reference: str) -> None:
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:  # the account was deleted meanwhile
        return
    credits_grant(user=user, amount=amount, reason=reason, reference=reference)


def credits_schedule_grant(*, user, amount: int, reason: str, reference: str) -> None:
    """Grants credits from a backend worker after the current transaction commits (admin, promotions)."""
    if amount <= 0:
        raise ValidationFailed("A grant must be a positive number of credits.", field="amount")
    # The id is read now: at the commit `user.pk` may be None (deleted in the same transaction).
    user_id = str(user.pk)
    transaction.on_commit(
        lambda: credits_grant_task.send(user_id=user_id, amount=amount, reason=reason, reference=reference)
    )
