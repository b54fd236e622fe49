"""Account deletion: every personal artifact of a user goes, the ledger stays.

Deleting an account crosses the apps that keep personal data. Storage sits below this app and is used
directly; the Soul ID and generations apps sit above it (they import `User`), so this app does not import
them: each registers an `ErasureStep` from its `AppConfig.ready`, and `account_delete` runs the steps.

Order matters: the password is checked first; each step's `erase` runs in `order` (Soul IDs first: that
raises if any artifact is left, so nothing else is touched; then the user's generations are canceled,
holds released, and hidden); every object under the user's storage prefixes (the steps' and the
uploads') is deleted and the prefixes are scanned empty; then in one transaction upload rows, devices and
refresh tokens go, the user row is deactivated and anonymised (kept, not deleted: the credit ledger and
the wallet reference it), and one AccountErasure records what was removed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from apps.core.errors import InvalidCredentials
from apps.storage.backends import get_storage
from apps.storage.models import Upload
from apps.storage.selectors import upload_prefixes_for_user

from .models import AccountErasure, Device, RefreshToken, User

logger = logging.getLogger(__name__)

ANONYMOUS_EMAIL_DOMAIN = "deleted.invalid"  # RFC 2606: never deliverable


@dataclass(frozen=True)
class ErasureStep:
    """One app's part in deleting an account. Every callable takes the user; the counts they return are
    recorded under `key` in `AccountErasure.removed`."""

    key: str
    order: int  # lower runs first
    # Before the storage sweep, outside any transaction; raises to stop the deletion there.
    erase: Callable[[User], int] | None = None
    # Prefixes whose every object is deleted, then scanned empty, after every `erase` ran.
    storage_prefixes: Callable[[User], list[str]] | None = None


_steps: dict[str, ErasureStep] = {}


def erasure_step_register(step: ErasureStep) -> None:
    """Adds an app's step (from its AppConfig.ready; registering the same step again changes nothing)."""
    if _steps.get(step.key, step) != step:
        raise ImproperlyConfigured(f"two account erasure steps are named {step.key!r}")
    _steps[step.key] = step


def erasure_steps() -> list[ErasureStep]:
    return sorted(_steps.values(), key=lambda step: step.order)


def user_storage_prefixes(*, user) -> list[str]:
    """Every storage prefix that holds a user's objects outside their Soul IDs."""
    steps = [step for step in erasure_steps() if step.storage_prefixes]
    return [
        *(prefix for step in steps for prefix in step.storage_prefixes(user)),
        *upload_prefixes_for_user(user=user),
    ]


def account_delete(*, user: User, password: str | None = None) -> uuid.UUID:
    """Deletes the caller's account. A password account must give its password (InvalidCredentials)."""
    if user.has_usable_password() and not (password and user.check_password(password)):
        raise InvalidCredentials("The password is not right.")

    removed: dict[str, int] = {}
    for step in erasure_steps():
        if step.erase:
            removed[step.key] = step.erase(user)

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
                **removed,
                "storage_objects": objects,
                "uploads": uploads,
                "devices": devices,
                "refresh_tokens": tokens,
                "at": timezone.now().isoformat(),
            },
        )
    logger.info("account %s deleted", user_id)
    return user_id
