"""Character.thumbnail: a face crop from the Soul ID's best photo, set when it is READY, served by an
expiring URL (MediaFile, like a generation's poster)."""

from __future__ import annotations

import io

import pytest
from django.test import Client
from PIL import Image

from apps.characters.models import Character
from apps.storage.backends import get_storage
from gpu_worker import contract

from . import test_training
from .test_training import TRAIN, _queued_training_jobs, _send_event, _wait

_routes = test_training._routes  # fixtures
trained_ready = test_training.trained_ready

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

THUMBNAIL = """query ($id: ID!) { character(id: $id) {
  status thumbnail { url width height bytes contentType durationSeconds fps } } }"""


def train_to_ready(me, character_id: str, *, sequence: int = 20) -> contract.TrainingJob:
    """trainCharacter, then what a GPU worker sends back when the training completes; waits for READY."""
    result = me(TRAIN, {"id": character_id})["data"]["trainCharacter"]
    assert result["__typename"] == "CharacterPayload", result
    job = max(_queued_training_jobs(), key=lambda queued: queued.attempt)
    get_storage().write(job.lora_key, b"safetensors", content_type=contract.LORA_CONTENT_TYPE)
    outputs = {
        "lora": {
            "key": job.lora_key,
            "content_type": contract.LORA_CONTENT_TYPE,
            "bytes": 11,
            "sha256": "ab",
        },
        "route": job.route.name,
        "family": job.family,
        "base_checkpoint": job.base_checkpoint,
        "trigger": job.trigger,
        "prompt": job.prompt,
        "rank": job.rank,
        "resolution": job.resolution,
        "photos": len(job.photo_keys),
        "steps": job.steps,
        "seed": job.seed,
    }
    _send_event(job.job_id, sequence, "completed", progress=1.0, outputs=outputs, attempt=job.attempt)
    _wait(me, character_id, "READY")
    return job


def test_a_ready_soul_id_has_a_thumbnail_with_an_expiring_url(trained_ready, storage_clock, settings):
    me, character_id = trained_ready
    before = me(THUMBNAIL, {"id": character_id})["data"]["character"]
    assert before == {"status": "COLLECTING", "thumbnail": None}

    train_to_ready(me, character_id)
    settings.DOWNLOAD_URL_TTL_SECONDS = 2
    thumbnail = me(THUMBNAIL, {"id": character_id})["data"]["character"]["thumbnail"]
    character = Character.objects.get()
    first_crop = character.photos.filter(status="ACCEPTED").first().crop_key
    crop = get_storage().read(first_crop, max_bytes=10**7)
    with Image.open(io.BytesIO(crop)) as image:
        width, height = image.size
    assert thumbnail["url"].startswith("http://testserver/")
    assert {k: v for k, v in thumbnail.items() if k != "url"} == {
        "width": width,
        "height": height,
        "bytes": len(crop),
        "contentType": "image/jpeg",
        "durationSeconds": None,
        "fps": None,
    }
    assert character.thumbnail_key.startswith(character.prefix)
    served = Client().get(thumbnail["url"])
    assert served.status_code == 200
    assert b"".join(served.streaming_content if served.streaming else [served.content]) == crop

    storage_clock.advance(2.1)
    assert Client().get(thumbnail["url"]).status_code == 403  # expired: query again for a fresh one
    fresh = me(THUMBNAIL, {"id": character_id})["data"]["character"]["thumbnail"]
    assert Client().get(fresh["url"]).status_code == 200


def test_another_users_soul_id_thumbnail_is_not_reachable(trained_ready, account):
    me, character_id = trained_ready
    train_to_ready(me, character_id)
    other = account()
    assert other(THUMBNAIL, {"id": character_id})["data"]["character"] is None
