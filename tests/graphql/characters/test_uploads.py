"""Photos uploaded the way the app does it: requestUploads, a multipart POST, then addCharacterPhotos
(which verifies an upload that was sent but not completed yet)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from apps.characters.models import CharacterPhoto
from apps.characters.photo_checks import reason_message
from apps.storage.backends import get_storage
from apps.storage.models import Upload
from tests.fixtures.characters import make_photos
from tests.fixtures.uploads import UploadFlow

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_sent_uploads_are_verified_and_checked(account, gql, client, django_worker, local_storage):
    me = account()
    flow = UploadFlow(gql, client, me.token)
    character_id = me.character_id()
    shot = make_photos.distinct_shots()[0]
    completed, completion = flow.upload(shot)
    assert completion["__typename"] == "UploadPayload"
    sent = flow.target()
    flow.send(sent, make_photos.distinct_shots()[1])  # sent, not completed: verified when added
    gps = flow.target("image/heic")
    flow.send(gps, make_photos.gps_heic())
    added = me.add(character_id, [completed["uploadId"], sent["uploadId"], gps["uploadId"]])
    assert added["__typename"] == "CharacterPayload", added
    character = me.wait_checked(character_id)
    # The HEIC is the same portrait as the first shot: accepted on its own, a duplicate in the set.
    assert [photo["status"] for photo in character["photos"]] == ["ACCEPTED", "ACCEPTED", "DUPLICATE"]
    assert not Upload.objects.exists()
    # What is kept of the HEIC that carried GPS is a JPEG with no metadata at all.
    kept = CharacterPhoto.objects.order_by("created_at", "id").last()
    with Image.open(io.BytesIO(get_storage().read(kept.clean_key, max_bytes=10**8))) as image:
        assert image.format == "JPEG"
        assert dict(image.getexif()) == {}
        assert "exif" not in image.info and "xmp" not in image.info


def test_a_batch_of_twelve_with_one_non_image_gives_eleven_verdicts_and_one_unreadable(
    account, gql, client, django_worker, local_storage
):
    me = account()
    flow = UploadFlow(gql, client, me.token)
    character_id = me.character_id()
    files = [*make_photos.distinct_shots()[:11]]
    files.insert(4, make_photos.not_an_image())  # a PDF, fifth of twelve
    targets = []
    for data in files:
        target = flow.target()
        flow.send(target, data)
        targets.append(target)
    upload_ids = [target["uploadId"] for target in targets]
    added = me(
        """mutation ($id: ID!, $uploads: [ID!]!) { addCharacterPhotos(characterId: $id, uploadIds: $uploads) {
        __typename ... on CharacterPayload { character { photos { uploadId status reasons } } } } }""",
        {"id": character_id, "uploads": upload_ids},
    )["data"]["addCharacterPhotos"]
    assert added["__typename"] == "CharacterPayload", added
    photos = added["character"]["photos"]
    # Every upload has its own verdict, in the order sent and naming its upload; the PDF's is final.
    assert [photo["uploadId"] for photo in photos] == upload_ids
    assert photos[4] == {"uploadId": upload_ids[4], "status": "REJECTED", "reasons": ["UNREADABLE"]}
    assert [photo["status"] for photo in photos[:4] + photos[5:]] == ["PENDING"] * 11
    character = me.wait_checked(character_id)
    statuses = [photo["status"] for photo in character["photos"]]
    assert statuses == ["ACCEPTED"] * 4 + ["REJECTED"] + ["ACCEPTED"] * 7
    assert character["photos"][4]["reasons"] == ["UNREADABLE"]
    assert character["photos"][4]["message"] == reason_message("UNREADABLE")
    assert character["status"] == "COLLECTING"  # 11 accepted photos are enough to train
    # The refused file was deleted from storage when it was refused; the accepted ones' uploads once checked.
    assert list(Upload.objects.values_list("status", flat=True)) == ["REJECTED"]


def test_an_upload_not_sent_yet_is_its_own_unreadable_verdict(account, gql, client, local_storage):
    me = account()
    flow = UploadFlow(gql, client, me.token)
    character_id = me.character_id()
    unsent = flow.target()
    result = me.add(character_id, [unsent["uploadId"]])
    assert result["__typename"] == "CharacterPayload", result
    [photo] = result["character"]["photos"]
    assert (photo["status"], photo["reasons"]) == ("REJECTED", ["UNREADABLE"])
    assert result["character"]["status"] == "NEEDS_PHOTOS"
    # Sent later, the same upload can be added again and is checked then.
    flow.send(unsent, make_photos.distinct_shots()[0])
    again = me.add(character_id, [unsent["uploadId"]])
    assert [photo["status"] for photo in again["character"]["photos"]] == ["REJECTED", "PENDING"]
