"""The Soul IDs' part in deleting an account (registered from apps.py; see apps/accounts/erasure.py):
every Soul ID of the user is erased first, now, in this process. That raises if any artifact is left,
so nothing else of the account is touched then."""

from __future__ import annotations

from apps.accounts.erasure import ErasureStep

from .services import characters_erase_for_user


def soul_ids_erase_for_user(user) -> int:
    return len(characters_erase_for_user(user=user))


ERASURE_STEP = ErasureStep(key="soul_ids", order=10, erase=soul_ids_erase_for_user)
