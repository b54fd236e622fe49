"""Who sees which Soul ID is decided here, once: the owner sees theirs that are not being erased, nobody
else sees any; the home screen asks the same rule whether a user has a usable Soul ID."""

from __future__ import annotations

import pytest

from apps.characters.models import Character, CharacterPhoto, CharacterStatus
from apps.characters.selectors import (
    character_photos_visible_to,
    character_usable_exists_for_user,
    characters_visible_to,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def ann(django_user_model):
    return django_user_model.objects.create_user("ann@example.com", "a-long-test-password-42")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob@example.com", "a-long-test-password-42")


def _character(owner, name, **fields) -> Character:
    character = Character.objects.create(owner=owner, name=name, **fields)
    CharacterPhoto.objects.create(character=character, upload_key=f"uploads/{owner.pk}/{name}")
    return character


def test_only_the_owners_soul_ids_not_being_erased_are_visible(ann, bob):
    mine = _character(ann, "mine")
    _character(ann, "erased", status=CharacterStatus.DELETING)
    theirs = _character(bob, "theirs")

    assert list(characters_visible_to(user=ann)) == [mine]
    assert list(characters_visible_to(user=bob)) == [theirs]
    assert list(characters_visible_to(user=None)) == []
    assert {p.character_id for p in character_photos_visible_to(user=ann)} == {mine.pk}
    assert not character_photos_visible_to(user=None).exists()


def test_a_usable_soul_id_is_one_with_a_lora_that_is_not_being_erased(ann, bob):
    _character(ann, "untrained")
    _character(ann, "erased", status=CharacterStatus.DELETING, lora_key="loras/erased")
    _character(bob, "theirs", status=CharacterStatus.READY, lora_key="loras/theirs")
    assert not character_usable_exists_for_user(user=ann)
    assert not character_usable_exists_for_user(user=None)

    # Being trained again keeps the LoRA usable.
    _character(ann, "retraining", status=CharacterStatus.TRAINING, lora_key="loras/retraining")
    assert character_usable_exists_for_user(user=ann)
