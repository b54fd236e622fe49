"""Erasure as account deletion uses it: `characters_erase_for_user` removes every Soul ID of the user now."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from apps.characters.models import Character, CharacterPhoto, ErasureRecord
from apps.characters.services import character_create, characters_erase_for_user, characters_purge_expired
from apps.storage.backends import get_storage

pytestmark = [pytest.mark.services, pytest.mark.django_db]


def test_account_deletion_erases_every_soul_id_of_the_user(django_user_model, settings):
    settings.STORAGE_BACKEND = "local"
    user = django_user_model.objects.create_user(email="gone@example.com", password="a-long-password-42")
    other = django_user_model.objects.create_user(email="stays@example.com", password="a-long-password-42")
    storage = get_storage()
    mine = [character_create(user=user, name=name, consent=True) for name in ("A", "B")]
    theirs = character_create(user=other, name="C", consent=True)
    for character in [*mine, theirs]:
        storage.write(f"{character.prefix}photos/x/clean.jpg", b"jpeg", content_type="image/jpeg")
        CharacterPhoto.objects.create(
            character=character,
            upload_key=f"uploads/{character.owner_id}/gone",
            status="REJECTED",
            reasons=["NO_FACE"],
        )

    records = characters_erase_for_user(user=user)

    assert sorted(r.character_ref for r in records) == sorted(c.pk for c in mine)
    assert {(r.status, r.trigger) for r in records} == {("DONE", "ACCOUNT_DELETION")}
    assert storage.list_keys(f"characters/{user.id}/") == []
    assert list(Character.objects.values_list("pk", flat=True)) == [theirs.pk]
    assert storage.list_keys(theirs.prefix) == [f"{theirs.prefix}photos/x/clean.jpg"]
    assert ErasureRecord.objects.count() == 2


def test_the_retention_purge_erases_only_soul_ids_unused_for_the_retention_term(django_user_model, settings):
    settings.STORAGE_BACKEND = "local"
    settings.CHARACTERS_RETENTION_DAYS = 365
    user = django_user_model.objects.create_user(email="old@example.com", password="a-long-password-42")
    storage = get_storage()
    old = character_create(user=user, name="Old", consent=True)
    recent = character_create(user=user, name="Recent", consent=True)
    for character in (old, recent):
        storage.write(f"{character.prefix}photos/x/crop.jpg", b"jpeg", content_type="image/jpeg")
    now = timezone.now()
    Character.objects.filter(pk=old.pk).update(last_used_at=now - dt.timedelta(days=365, seconds=1))
    Character.objects.filter(pk=recent.pk).update(last_used_at=now - dt.timedelta(days=364))

    # The clock stands still at `now`: one second past the term for one, a day short for the other.
    records = characters_purge_expired(now=now)

    assert [(r.character_ref, r.trigger, r.status) for r in records] == [(old.pk, "RETENTION", "DONE")]
    assert storage.list_keys(old.prefix) == []
    assert storage.list_keys(recent.prefix) == [f"{recent.prefix}photos/x/crop.jpg"]
    assert list(Character.objects.values_list("pk", flat=True)) == [recent.pk]
    # At exactly 365 days it is kept; a second later its term is over too.
    assert characters_purge_expired(now=now + dt.timedelta(days=1)) == []
    later = characters_purge_expired(now=now + dt.timedelta(days=1, seconds=1))
    assert [r.character_ref for r in later] == [recent.pk]
    assert characters_purge_expired(now=now + dt.timedelta(days=2)) == []
