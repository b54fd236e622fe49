"""Soul IDs through GraphQL: consent, photos checked on a backend worker, removal, access."""

from __future__ import annotations

import functools

import pytest

from apps.characters.consent import consent_text
from apps.characters.models import Character, CharacterPhoto, ConsentRecord
from apps.storage.backends import get_storage
from apps.storage.models import Upload
from apps.storage.services import upload_refuse
from tests.fixtures.characters import CHARACTERS, REMOVE_PHOTO, make_photos

pytestmark = [pytest.mark.services]


@functools.cache
def shots() -> list[bytes]:
    return make_photos.distinct_shots()


@pytest.mark.django_db
def test_create_without_consent_stores_nothing(account):
    me = account()
    result = me.create("Me", consent=False)
    assert result["__typename"] == "ConsentRequired"
    assert result["code"] == "CONSENT_REQUIRED"
    assert Character.objects.count() == 0
    assert ConsentRecord.objects.count() == 0


@pytest.mark.django_db
def test_create_records_which_consent_text_and_when(account, settings):
    me = account()
    result = me(
        """mutation { createCharacter(input: {name: "  Sam  ", consent: true}) {
        __typename ... on CharacterPayload { character { id name status photos { id } } } } }"""
    )["data"]["createCharacter"]
    assert result["__typename"] == "CharacterPayload"
    assert result["character"]["name"] == "Sam"
    assert result["character"]["status"] == "COLLECTING"
    assert result["character"]["photos"] == []
    character = Character.objects.get()
    record = ConsentRecord.objects.get()
    text = consent_text(settings.CHARACTERS_CONSENT_VERSION)
    assert (record.user, record.character, record.character_ref) == (me.user, character, character.pk)
    assert record.text_version == text.version
    assert record.text_sha256 == text.sha256 and len(record.text_sha256) == 64
    assert record.purpose == text.purpose and record.retention_term == text.retention_term
    assert record.ip_address == "127.0.0.1"
    assert record.withdrawn_at is None


@pytest.mark.django_db
def test_create_refuses_an_empty_name_and_more_than_the_maximum(account, settings):
    settings.CHARACTERS_MAX_PER_USER = 1
    me = account()
    assert me.create("   ")["__typename"] == "ValidationError"
    assert me.create("One")["__typename"] == "CharacterPayload"
    second = me.create("Two")
    assert second["__typename"] == "ValidationError"
    assert Character.objects.count() == 1 and ConsentRecord.objects.count() == 1


@pytest.mark.django_db
def test_another_users_character_is_not_found(account):
    me, other = account(), account()
    character_id = other.character_id()
    result = me.character(character_id)
    assert result["data"]["character"] is None
    assert result["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert me(CHARACTERS)["data"]["characters"] == []
    upload_ids = me.uploads(shots()[:1])
    added = me.add(character_id, upload_ids)
    assert added["__typename"] == "NotFound"
    assert CharacterPhoto.objects.count() == 0
    deleted = me(
        "mutation ($id: ID!) { deleteCharacter(characterId: $id) { __typename } }", {"id": character_id}
    )["data"]["deleteCharacter"]
    assert deleted["__typename"] == "NotFound"
    assert Character.objects.get().status == "COLLECTING"


@pytest.mark.django_db
def test_another_users_upload_is_not_found_and_nothing_is_added(account):
    me, other = account(), account()
    character_id = me.character_id()
    mine = me.uploads(shots()[:1])
    theirs = other.uploads(shots()[1:2])
    result = me.add(character_id, [*mine, *theirs])
    assert result["__typename"] == "NotFound"
    assert result["field"] == "uploadIds"
    assert result["message"] == "The upload at position 2 of uploadIds does not exist."
    assert CharacterPhoto.objects.count() == 0
    assert Character.objects.get().status == "COLLECTING"


@pytest.mark.django_db
def test_more_than_twenty_photos_is_refused(account):
    me = account()
    character_id = me.character_id()
    result = me.add(character_id, me.uploads([b"x"] * 21))
    assert result["__typename"] == "TooManyPhotos"
    assert (result["code"], result["maximum"], result["count"]) == ("TOO_MANY_PHOTOS", 20, 21)
    assert CharacterPhoto.objects.count() == 0
    first = me.add(character_id, me.uploads([b"x"] * 15))
    assert first["__typename"] == "CharacterPayload"
    assert len(first["character"]["photos"]) == 15
    assert first["character"]["status"] == "VALIDATING"
    again = me.add(character_id, me.uploads([b"x"] * 6))
    assert again["__typename"] == "TooManyPhotos"
    assert (again["maximum"], again["count"]) == (20, 21)
    assert CharacterPhoto.objects.count() == 15


@pytest.mark.django_db
def test_an_upload_is_added_only_once(account):
    me = account()
    character_id = me.character_id()
    upload_ids = me.uploads(shots()[:1])
    assert me.add(character_id, upload_ids)["__typename"] == "CharacterPayload"
    again = me.add(character_id, upload_ids)
    assert again["__typename"] == "ValidationError"
    assert CharacterPhoto.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_photos_are_checked_on_a_worker_with_reasons(account, django_worker, local_storage):
    me = account()
    character_id = me.character_id()
    rejected = make_photos.rejected_photos()
    photos = [*shots()[:10], rejected["no_face"][0], rejected["blurry"][0], shots()[0]]
    upload_ids = me.uploads(photos)
    added = me.add(character_id, upload_ids)
    assert added["__typename"] == "CharacterPayload", added
    assert [photo["status"] for photo in added["character"]["photos"]] == ["PENDING"] * 13

    character = me.wait_checked(character_id)
    statuses = [(photo["status"], photo["reasons"]) for photo in character["photos"]]
    assert statuses == [
        *[("ACCEPTED", [])] * 10,
        ("REJECTED", ["NO_FACE"]),
        ("REJECTED", ["BLURRY"]),
        ("DUPLICATE", ["DUPLICATE"]),
    ]
    assert character["status"] == "COLLECTING"  # 10 distinct accepted photos: enough to train
    assert character["acceptedPhotoCount"] == 10
    assert all(photo["message"] is None for photo in character["photos"][:10])
    assert "face" in character["photos"][10]["message"]

    # The originals (and their upload rows) are gone; each accepted photo has its clean copy and crop.
    storage = get_storage()
    row = Character.objects.get()
    assert storage.list_keys(f"uploads/{me.user.id}/") == []
    assert Upload.objects.count() == 0
    stored = storage.list_keys(row.prefix)
    # A duplicate keeps its outputs: it is used if the photo it repeats is removed.
    accepted = CharacterPhoto.objects.filter(status__in=["ACCEPTED", "DUPLICATE"])
    assert len(accepted) == 11
    assert sorted(stored) == sorted(
        [f"{row.prefix}photos/{photo.pk}/{name}.jpg" for photo in accepted for name in ("clean", "crop")]
    )
    clean = storage.read(f"{row.prefix}photos/{accepted[0].pk}/clean.jpg", max_bytes=10**8)
    assert clean[:2] == b"\xff\xd8" and b"Exif" not in clean[:64]

    # Removing a rejected photo and one accepted one: 9 distinct left, not enough to train.
    photo_ids = [photo["id"] for photo in character["photos"]]
    removed = me(REMOVE_PHOTO, {"id": character_id, "photo": photo_ids[10]})["data"]["removeCharacterPhoto"]
    assert removed["__typename"] == "CharacterPayload"
    removed = me(REMOVE_PHOTO, {"id": character_id, "photo": photo_ids[0]})["data"]["removeCharacterPhoto"]
    character = removed["character"]
    assert [photo["id"] for photo in character["photos"]] == [*photo_ids[1:10], photo_ids[11], photo_ids[12]]
    # The duplicate of the removed photo is now the one kept: ACCEPTED, and 10 are usable again.
    assert character["photos"][-1]["status"] == "ACCEPTED"
    assert character["acceptedPhotoCount"] == 10
    assert character["status"] == "COLLECTING"
    removed_photo = photo_ids[0]
    assert not [key for key in storage.list_keys(row.prefix) if removed_photo.split(":")[-1] in key]
    again = me(REMOVE_PHOTO, {"id": character_id, "photo": photo_ids[-1]})["data"]["removeCharacterPhoto"]
    assert again["character"]["status"] == "NEEDS_PHOTOS"
    assert again["character"]["acceptedPhotoCount"] == 9


@pytest.mark.django_db
def test_listing_characters_costs_the_same_queries_however_many(
    account, django_assert_max_num_queries, settings
):
    settings.CHARACTERS_MAX_PER_USER = 5
    me = account()
    character_id = me.character_id("First")
    me.add(character_id, me.uploads([b"x"] * 3))

    def count_queries() -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as captured:
            result = me(CHARACTERS)
        assert "errors" not in result
        return len(captured)

    few = count_queries()
    for name in ("Second", "Third", "Fourth"):
        other = me.character_id(name)
        me.add(other, me.uploads([b"x"] * 4))
    assert len(me(CHARACTERS)["data"]["characters"]) == 4
    assert count_queries() == few


@pytest.mark.django_db(transaction=True)
def test_a_photo_removed_while_it_is_checked_leaves_nothing_behind(account, django_worker, local_storage):
    me = account()
    character_id = me.character_id()
    django_worker.pause()
    added = me.add(character_id, me.uploads(shots()[:2]))
    photo_ids = [photo["id"] for photo in added["character"]["photos"]]
    removed = me(REMOVE_PHOTO, {"id": character_id, "photo": photo_ids[0]})["data"]["removeCharacterPhoto"]
    assert [photo["id"] for photo in removed["character"]["photos"]] == photo_ids[1:]
    assert removed["character"]["status"] == "VALIDATING"
    django_worker.resume()
    character = me.wait_checked(character_id)
    assert [photo["status"] for photo in character["photos"]] == ["ACCEPTED"]
    assert character["status"] == "NEEDS_PHOTOS"
    django_worker.join()  # the removed photo's check has run too, and found nothing to do
    row = Character.objects.get()
    kept = CharacterPhoto.objects.get()
    assert sorted(get_storage().list_keys(row.prefix)) == [kept.clean_key, kept.crop_key]
    assert get_storage().list_keys(f"uploads/{me.user.id}/") == []
    assert not Upload.objects.exists()


@pytest.mark.django_db
def test_a_photo_the_selfie_checks_refused_keeps_its_reason_in_a_soul_id(account):
    me = account()
    character_id = me.character_id()
    [upload_id] = me.uploads([make_photos.no_face_jpeg()])
    upload_refuse(upload_id=upload_id, reason="NO_FACE", message="No face.")  # refused as a selfie before
    result = me.add(character_id, [upload_id])
    assert result["__typename"] == "CharacterPayload", result
    assert [(p["status"], p["reasons"]) for p in result["character"]["photos"]] == [("REJECTED", ["NO_FACE"])]
