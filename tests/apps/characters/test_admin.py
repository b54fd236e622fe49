"""Soul IDs, consent and erasure records are read-only in the admin, for superusers too: a Soul ID is
erased only through the erasure service (which removes its stored photos and weights and records it)."""

from __future__ import annotations

import pytest

from apps.accounts.models import User
from apps.characters.models import Character, ConsentRecord, ErasureRecord
from apps.characters.services import character_create, characters_erase_for_user

pytestmark = pytest.mark.django_db


def test_soul_ids_and_their_audit_trails_cannot_be_added_changed_or_deleted_in_the_admin(client):
    owner = User.objects.create_user(email="owner@example.com", password="a-long-password-42")
    leaving = User.objects.create_user(email="leaving@example.com", password="a-long-password-42")
    kept = character_create(user=owner, name="Kept", consent=True)
    erased = character_create(user=leaving, name="Erased", consent=True)
    characters_erase_for_user(user=leaving)
    consent = ConsentRecord.objects.get(character_ref=kept.pk)
    erasure = ErasureRecord.objects.get(character_ref=erased.pk)
    client.force_login(User.objects.create_superuser("root@example.com", "a-long-test-password-42"))

    for model, pk in (("character", kept.pk), ("consentrecord", consent.pk), ("erasurerecord", erasure.pk)):
        assert client.get(f"/admin/characters/{model}/").status_code == 200
        assert client.get(f"/admin/characters/{model}/{pk}/change/").status_code == 200
        assert client.get(f"/admin/characters/{model}/add/").status_code == 403
        assert client.post(f"/admin/characters/{model}/{pk}/delete/", {"post": "yes"}).status_code == 403
    assert Character.objects.filter(pk=kept.pk).exists()
    assert ConsentRecord.objects.filter(pk=consent.pk).exists()
    assert ErasureRecord.objects.filter(pk=erasure.pk).exists()
