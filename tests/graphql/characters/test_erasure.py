"""deleteCharacter: one audited job removes every stored artifact (every S3 version) and the rows; a scan
of storage then finds nothing under the Soul ID's prefixes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from apps.characters.models import Character, CharacterPhoto, ConsentRecord, ErasureRecord
from apps.storage.backends import get_storage
from apps.storage.models import Upload
from tests.fixtures.characters import CHARACTERS, DELETE, make_photos

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _wait_erased(character_pk, timeout: float = 60) -> ErasureRecord:
    deadline = time.monotonic() + timeout
    while True:
        record = ErasureRecord.objects.filter(character_ref=character_pk).first()
        if record is not None and record.status == "DONE":
            return record
        assert time.monotonic() < deadline, record and record.artifacts
        time.sleep(0.2)


def test_delete_removes_every_artifact_and_version(account, django_worker, backend, request, settings):
    me = account()
    character_id = me.character_id()
    shots = make_photos.distinct_shots()[:3]
    photos = [*shots, shots[0], make_photos.rejected_photos()["no_face"][0]]
    assert me.add(character_id, me.uploads(photos))["__typename"] == "CharacterPayload"
    checked = me.wait_checked(character_id)
    assert [photo["status"] for photo in checked["photos"]] == [
        *["ACCEPTED"] * 3,
        "DUPLICATE",
        "REJECTED",
    ]
    # What training leaves (training itself is not here yet): weights, and a thumbnail written twice
    # (two versions on S3).
    storage = get_storage()
    character = Character.objects.get()
    lora_key = f"{character.prefix}lora/v1.safetensors"
    thumbnail_key = f"{character.prefix}thumbnail.jpg"
    storage.write(lora_key, b"weights", content_type="application/octet-stream")
    storage.write(thumbnail_key, b"one", content_type="image/jpeg")
    storage.write(thumbnail_key, b"two", content_type="image/jpeg")
    Character.objects.filter(pk=character.pk).update(lora_key=lora_key, thumbnail_key=thumbnail_key)
    # A photo added and still waiting for its check when the Soul ID is deleted: its original too.
    pending = me.uploads([shots[1]])
    django_worker.pause()
    assert me.add(character_id, pending)["__typename"] == "CharacterPayload"
    if backend == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        assert len(bucket.versions(character.prefix)) == 2 * 4 + 1 + 2
    prefixes = [character.prefix, f"uploads/{me.user.id}/", f"incoming/{me.user.id}/"]
    assert storage.list_keys(prefixes[1]) == [f"uploads/{me.user.id}/{pending[0]}"]

    deleted = me(DELETE, {"id": character_id})["data"]["deleteCharacter"]
    assert deleted == {"__typename": "DeletePayload", "id": character_id}
    # Gone from the API at once, before the job ran.
    assert me(CHARACTERS)["data"]["characters"] == []
    refused = me.character(character_id)
    assert refused["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    django_worker.resume()

    record = _wait_erased(character.pk)
    for prefix in prefixes:
        assert storage.list_keys(prefix) == [], prefix
    if backend == "s3":
        assert bucket.versions(f"characters/{me.user.id}/") == []
        assert bucket.versions(f"uploads/{me.user.id}/") == []
    else:
        leftovers = [path for path in Path(settings.MEDIA_ROOT).rglob("*") if path.is_file()]
        assert [path for path in leftovers if str(character.pk) in str(path) or pending[0] in str(path)] == []
    assert not Character.objects.exists()
    assert not CharacterPhoto.objects.exists()
    assert not Upload.objects.exists()

    # The audit: each artifact and its result, and no biometric content.
    assert record.trigger == "USER_REQUEST"
    assert record.user_ref == me.user.id and record.finished_at is not None
    by_kind: dict[str, list[dict]] = {}
    for artifact in record.artifacts:
        by_kind.setdefault(artifact["kind"], []).append(artifact)
    assert len(by_kind["photo_clean"]) == 4 and len(by_kind["face_crop"]) == 4
    assert {a["result"] for a in by_kind["photo_clean"] + by_kind["face_crop"]} == {"removed"}
    assert [a["result"] for a in by_kind["photo_original"]].count("removed") == 1  # only the pending one
    assert by_kind["lora_weights"][0]["result"] == "removed"
    assert by_kind["thumbnail"][0]["result"] == "removed"
    if backend == "s3":
        assert by_kind["thumbnail"][0]["removed"] == 2
    assert by_kind["prefix"] == [
        {"kind": "prefix", "location": character.prefix, "result": "empty", "removed": 0, "left": 0}
    ]
    assert by_kind["database"][0]["photos"] == 6
    consent = ConsentRecord.objects.get()
    assert consent.character is None and consent.withdrawn_at is not None
