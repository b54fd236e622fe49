"""Upload reads, with the access check: another user's upload is NotFound, exactly like a missing one."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from apps.core.errors import NotFound

from .models import Upload


def upload_prefixes_for_user(*, user) -> list[str]:
    """Every storage prefix that holds a user's uploads (for erasure and its final scan)."""
    return [f"uploads/{user.id}/", f"incoming/{user.id}/"]


def uploads_visible_to(*, user) -> QuerySet[Upload]:
    """The user's uploads; none when signed out."""
    if user is None:
        return Upload.objects.none()
    return Upload.objects.filter(user=user)


def upload_get_for_user(*, user, upload_id: uuid.UUID | str, for_update: bool = False) -> Upload:
    try:
        pk = uuid.UUID(str(upload_id))
    except ValueError:
        raise NotFound("This upload does not exist.", field="uploadId") from None
    queryset = uploads_visible_to(user=user).filter(pk=pk)
    if for_update:
        queryset = queryset.select_for_update()
    upload = queryset.first()
    if upload is None:
        raise NotFound("This upload does not exist.", field="uploadId")
    return upload
