"""A user sees their own uploads only; another user's upload is NotFound, exactly like a missing one."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from apps.core.errors import NotFound
from apps.storage.models import Upload
from apps.storage.selectors import upload_get_for_user, uploads_visible_to

pytestmark = pytest.mark.django_db


def _upload(user) -> Upload:
    pk = uuid.uuid4()
    return Upload.objects.create(
        pk=pk,
        user=user,
        key=f"uploads/{user.pk}/{pk}",
        incoming_key=f"incoming/{user.pk}/{pk}",
        content_type="image/jpeg",
        max_bytes=1024,
        expires_at=timezone.now() + dt.timedelta(minutes=15),
    )


def test_uploads_are_visible_to_their_owner_only(django_user_model):
    ann = django_user_model.objects.create_user("ann@example.com", "a-long-test-password-42")
    bob = django_user_model.objects.create_user("bob@example.com", "a-long-test-password-42")
    mine, theirs = _upload(ann), _upload(bob)

    assert list(uploads_visible_to(user=ann)) == [mine]
    assert not uploads_visible_to(user=None).exists()
    assert upload_get_for_user(user=ann, upload_id=str(mine.pk)) == mine
    for user, upload_id in ((ann, theirs.pk), (None, mine.pk), (ann, "not-a-uuid")):
        with pytest.raises(NotFound):
            upload_get_for_user(user=user, upload_id=upload_id)
