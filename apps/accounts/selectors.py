from __future__ import annotations

import uuid

from .models import User


def user_get_active(*, user_id: uuid.UUID) -> User | None:
    return User.objects.filter(pk=user_id, is_active=True).first()
