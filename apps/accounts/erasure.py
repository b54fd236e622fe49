"""Account deletion: every personal artifact of a user goes, the ledger stays.

Order matters: the password is checked first; Soul IDs are erased (raises if any artifact is left, so
nothing else is touched); the user's generations are canceled (holds released) and hidden; every object
under the user's storage prefixes is deleted and the prefixes are scanned empty; then in one transaction
upload rows, devices and refresh tokens go, the user row is deactivated and anonymised (kept, not
deleted: the credit ledger and the wallet reference it), and one AccountErasure records what was removed.
"""

from __future__ import annotations

import logging
import uuid

from django.db import transaction
from django.utils import timezone

from apps.core.errors import InvalidCredentials

from .models import AccountErasure, Device, RefreshToken, User

logger = logging.getLogger(__name__)

ANONYMOUS_EMAIL_DOMAIN = "deleted.invalid"  # RFC 2606: never deliverable


def user_storage_prefixes(*, user) -> list[str]:
    """Every storage prefix that holds a user's objects outside their Soul IDs."""
    from apps.generations.models import user_generations_prefix
    from apps.storage.selectors import upload_prefixes_for_user

    return [user_generations_prefix(user.id), *upload_prefixes_for_user(user=user)]


def _cancel_and_hide_generations(*, user) -> int:
    from apps.generations.models import Generation
    from apps.generations.services import generation_delete

    ids = list(Generation.objects.filter(owner=user, deleted_at__isnull=True).values_list("pk", flat=True))
    for generation_id in ids:
        generation_delete(user=user, generation_id=generation_id)  # cancels a running one first
    return len(ids)


def account_delete(*, user: User, password: str | None = None) -> uuid.UUID:
    """Deletes the caller's account. A password account must give its password (InvalidCredentials)."""
    from apps.characters.services import characters_erase_for_user
    from apps.storage.backends import get_storage
    from apps.storage.models import Upload

    if user.has_usable_password() and not (password and user.check_password(password)):
        raise InvalidCredentials("The password is not right.")

    erasures = characters_erase_for_user(user=user)
    generations = _cancel_and_hide_generations(user=user)

    storage = get_storage()
    objects = 0
    for prefix in user_storage_prefixes(user=user):
        objects += storage.delete_prefix(prefix)
        left = storage.list_keys(prefix)
        if left:
            raise RuntimeError(f"account deletion left {len(left)} objects under {prefix}")

    user_id = user.pk
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user_id)
        uploads, _ = Upload.objects.filter(user=user).delete()
        devices, _ = Device.objects.filter(user=user).delete()
        tokens, _ = RefreshToken.objects.filter(user=user).delete()
        user.is_active = False
        user.email = f"deleted-{user_id}@{ANONYMOUS_EMAIL_DOMAIN}"
        user.firebase_uid = None
        user.set_unusable_password()
        user.save(update_fields=["is_active", "email", "firebase_uid", "password"])
        AccountErasure.objects.create(
            user_ref=user_id,
            removed={
                "soul_ids": len(erasures),
                "generations": generations,
                "storage_objects": objects,
                "uploads": uploads,
                "devices": devices,
                "refresh_tokens": tokens,
                "at": timezone.now().isoformat(),
            },
        )
    logger.info("account %s deleted", user_id)
    return user_id
