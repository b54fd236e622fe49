"""The generations' part in deleting an account (registered from apps.py; see apps/accounts/erasure.py):
every generation of the user is canceled if still going (its credit hold released) and hidden, and the
user's generations prefix is swept."""

from __future__ import annotations

from apps.accounts.erasure import ErasureStep

from .models import Generation, user_generations_prefix
from .services import generation_delete


def generations_erase_for_user(user) -> int:
    ids = list(Generation.objects.filter(owner=user, deleted_at__isnull=True).values_list("pk", flat=True))
    for generation_id in ids:
        generation_delete(user=user, generation_id=generation_id)  # cancels a running one first
    return len(ids)


ERASURE_STEP = ErasureStep(
    key="generations",
    order=20,
    erase=generations_erase_for_user,
    storage_prefixes=lambda user: [user_generations_prefix(user.id)],
)
