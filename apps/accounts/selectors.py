from __future__ import annotations

import uuid

from .models import Device, User


def user_get_active(*, user_id: uuid.UUID) -> User | None:
    return User.objects.filter(pk=user_id, is_active=True).first()


def devices_for_user(*, user: User):
    return Device.objects.filter(user=user).order_by("-last_seen_at")
