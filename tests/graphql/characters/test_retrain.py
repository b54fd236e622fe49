"""Training a READY Soul ID again with more photos: photos can be added (it goes back to COLLECTING),
its LoRA stays usable by generations meanwhile, and the previous LoRA is erased once the new one is
READY (kept when the new training fails)."""

from __future__ import annotations

import uuid

import pytest

from apps.characters.models import Character
from apps.credits.models import Wallet
from apps.generations.models import Generation
from apps.storage.backends import get_storage
from tests.graphql.generations.helpers import CREATE as CREATE_GENERATION
from tests.graphql.generations.helpers import a_trend

from . import test_training
from .test_thumbnail import train_to_ready
from .test_training import TRAIN, _queued_training_jobs, _send_event, _wait, shots

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

_routes = test_training._routes  # fixtures
trained_ready = test_training.trained_ready


def _generate(me, character_id: str, trend) -> dict:
    variables = {
        "input": {"trendSlug": trend.slug, "characterId": character_id, "idempotencyKey": str(uuid.uuid4())}
    }
    return me(CREATE_GENERATION, variables)["data"]["createGeneration"]


@pytest.fixture
def ready(trained_ready, settings):
    settings.GENERATIONS_ROUTE_OVERRIDE = ""  # route by the trend's chain
    me, character_id = trained_ready
    job = train_to_ready(me, character_id)
    return me, character_id, job


def test_a_ready_soul_id_is_not_trained_again_without_new_photos(ready):
    me, character_id, _ = ready
    result = me(TRAIN, {"id": character_id})["data"]["trainCharacter"]
    assert (result["__typename"], result["code"]) == ("ValidationError", "VALIDATION")
    assert "Add photos" in result["message"]
    assert Character.objects.get().training_runs.count() == 1
    assert Wallet.objects.get(user=me.user).held == 0


def test_more_photos_then_a_new_training_replaces_the_lora(ready):
    me, character_id, first = ready
    storage = get_storage()
    trend = a_trend(requires="SOUL_ID", preferred_model_route=first.route.name, price_standard=4)

    added = me.add(character_id, me.uploads(shots()[10:12]))
    assert added["__typename"] == "CharacterPayload", added
    assert added["character"]["status"] == "VALIDATING"
    checked = me.wait_checked(character_id)
    assert (checked["status"], checked["acceptedPhotoCount"]) == ("COLLECTING", 12)

    # While it is collecting, then training, generations still use the READY LoRA.
    made = _generate(me, character_id, trend)
    assert made["__typename"] == "GenerationPayload", made
    result = me(TRAIN, {"id": character_id})["data"]["trainCharacter"]
    assert result["__typename"] == "CharacterPayload", result
    assert result["character"]["status"] == "TRAINING"
    second = max(_queued_training_jobs(), key=lambda job: job.attempt)
    assert (second.attempt, len(second.photo_keys)) == (2, 12)
    assert second.lora_key != first.lora_key and second.output_prefix.startswith(
        Character.objects.get().prefix
    )
    made_while_training = _generate(me, character_id, trend)
    assert made_while_training["__typename"] == "GenerationPayload", made_while_training
    assert set(Generation.objects.values_list("lora_key", flat=True)) == {first.lora_key}
    assert storage.head(first.lora_key) is not None

    # Only training jobs are queued on the training lane: complete attempt 2.
    storage.write(second.lora_key, b"new-safetensors", content_type="application/octet-stream")
    from gpu_worker import contract

    outputs = {
        "lora": {
            "key": second.lora_key,
            "content_type": contract.LORA_CONTENT_TYPE,
            "bytes": 15,
            "sha256": "cd",
        },
        "route": second.route.name,
        "family": second.family,
        "base_checkpoint": second.base_checkpoint,
        "trigger": second.trigger,
        "prompt": second.prompt,
        "photos": 12,
        "steps": second.steps,
    }
    _send_event(second.job_id, 30, "completed", progress=1.0, outputs=outputs, attempt=2)
    _wait(me, character_id, "READY")
    character = Character.objects.get()
    assert (character.lora_key, character.lora_metadata["attempt"]) == (second.lora_key, 2)
    assert storage.head(first.lora_key) is None
    assert storage.list_keys(first.lora_key.rsplit("/", 1)[0] + "/") == []
    assert storage.head(second.lora_key) is not None
    wallet = Wallet.objects.get(user=me.user)
    # 20 welcome + 100 granted; two trainings captured; the two queued generations hold their price
    assert (wallet.balance, wallet.held) == (120 - 40 - 40 - 8, 8)

    made_after = _generate(me, character_id, trend)
    assert made_after["__typename"] == "GenerationPayload", made_after
    assert Generation.objects.order_by("-created_at").first().lora_key == second.lora_key


def test_a_failed_retraining_keeps_the_previous_lora_usable(ready):
    me, character_id, first = ready
    trend = a_trend(requires="SOUL_ID", preferred_model_route=first.route.name, price_standard=4)
    me.add(character_id, me.uploads(shots()[10:11]))
    assert me.wait_checked(character_id)["status"] == "COLLECTING"
    assert me(TRAIN, {"id": character_id})["data"]["trainCharacter"]["__typename"] == "CharacterPayload"
    second = max(_queued_training_jobs(), key=lambda job: job.attempt)
    _send_event(
        second.job_id, 40, "failed", reason_code="OUT_OF_MEMORY", message="It did not work.", attempt=2
    )
    state = _wait(me, character_id, "FAILED")
    assert state["failureMessage"] == "It did not work."
    character = Character.objects.get()
    assert character.lora_key == first.lora_key
    assert get_storage().head(first.lora_key) is not None
    made = _generate(me, character_id, trend)
    assert made["__typename"] == "GenerationPayload", made
    assert Generation.objects.get().lora_key == first.lora_key
    wallet = Wallet.objects.get(user=me.user)
    assert (wallet.balance, wallet.held) == (120 - 40 - 4, 4)  # the failed training's hold was released
