"""Organizations' reads."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import OuterRef, Subquery

from .models import Organization


def organization_for_account(*, account_id) -> Organization | None:
    """The organization whose service account is `account_id` (None for an app user)."""
    if account_id is None:
        return None
    return Organization.objects.filter(account_id=account_id).first()


def organization_generation_cap(*, account_id) -> int | None:
    """The organization's cap on active generations when `account_id` is an organization's account."""
    if account_id is None:
        return None
    return (
        Organization.objects.filter(account_id=account_id)
        .values_list("max_active_generations", flat=True)
        .first()
    )


def organization_generation_cap_locking_account(*, account_id) -> int | None:
    """`organization_generation_cap`, read by the statement that locks the account's user row until the
    commit (SELECT ... FOR UPDATE): a create's first two reads in one round trip. Inside a transaction."""
    cap = Organization.objects.filter(account_id=OuterRef("pk")).values("max_active_generations")[:1]
    locked = get_user_model().objects.select_for_update().filter(pk=account_id)
    return next(iter(locked.values_list(Subquery(cap), flat=True)), None)
