"""Account reads, with the access rule: a user sees their own account and devices, nobody else's."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from .models import Device, User


def user_get_active(*, user_id: uuid.UUID) -> User | None:
    return User.objects.filter(pk=user_id, is_active=True).first()


def users_visible_to(*, user: User | None) -> QuerySet[User]:
    """The accounts `user` may look up by id: their own; none when signed out."""
    if user is None:
        return User.objects.none()
    return User.objects.filter(pk=user.pk)


def devices_visible_to(*, user: User | None) -> QuerySet[Device]:
    """The user's devices, most recently seen first; none when signed out."""
    if user is None:
        return Device.objects.none()
    return Device.objects.filter(user=user).order_by("-last_seen_at")
