"""Organizations' reads."""

from __future__ import annotations

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
