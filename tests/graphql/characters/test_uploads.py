"""Photos uploaded the way the app does it: requestUploads, a multipart POST, then addCharacterPhotos
(which verifies an upload that was sent but not completed yet)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from apps.characters.models import CharacterPhoto
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


def test_a_refused_upload_adds_nothing(account, gql, client, local_storage):
    me = account()
    flow = UploadFlow(gql, client, me.token)
    character_id = me.character_id()
    good = flow.target()
    flow.send(good, make_photos.distinct_shots()[0])
    bad = flow.target()
    flow.send(bad, make_photos.not_an_image())
    result = me.add(character_id, [good["uploadId"], bad["uploadId"]])
    assert result["__typename"] == "UploadInvalid"
    assert result["code"] == "UPLOAD_INVALID"
    assert result["reason"] == "UNSUPPORTED_TYPE"  # a PDF
    assert not CharacterPhoto.objects.exists()
    # Both were verified on the way; the refusal stays recorded and its file is gone.
    assert sorted(Upload.objects.values_list("status", flat=True)) == ["REJECTED", "VERIFIED"]
    unsent = flow.target()
    result = me.add(character_id, [unsent["uploadId"]])
    assert (result["__typename"], result["reason"]) == ("UploadInvalid", "NOT_UPLOADED")
    assert not CharacterPhoto.objects.exists()
