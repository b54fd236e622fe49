"""trainCharacter: the photo rules, the credits hold, the TrainingJob on the GPU training lane, and the
job events a GPU worker sends back (through the job contract, applied by the real Django worker)."""

from __future__ import annotations

import functools
import json
import time

import dramatiq
import pytest

from apps.characters.models import Character, TrainingRun
from apps.credits.models import Wallet
from apps.credits.services import credits_grant
from apps.generations.models import ModelRoute
from apps.generations.shipped import routes_ensure_shipped
from apps.notifications.models import PushMessage
from apps.storage.backends import get_storage
from gpu_worker import contract
from tests.fixtures.characters import DELETE, FRAGMENT, make_photos

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

TRAIN = (
    """
mutation ($id: ID!) {
  trainCharacter(characterId: $id) {
    __typename
    ... on CharacterPayload { character { ...C trainingProgress trainingStep trainingTotalSteps } }
    ... on NotEnoughPhotos { required accepted }
    ... on InsufficientCredits { required balance }
    ... on Error { code message }
  }
}"""
    + FRAGMENT
)

REGISTER_DEVICE = """mutation {
  registerDevice(input: {token: "device-token-1", platform: IOS, appVersion: "1.0.0"}) { __typename } }"""

TRAINING_STATE = """query ($id: ID!) { character(id: $id) {
  status trainingProgress trainingStep trainingTotalSteps trainingEtaSeconds failureMessage } }"""


@functools.cache
def shots() -> list[bytes]:
    return make_photos.distinct_shots()


def _queued_training_jobs() -> list[contract.TrainingJob]:
    broker = dramatiq.get_broker()
    stored = broker.client.hvals(f"{broker.namespace}:{contract.QUEUE_GPU_TRAINING}.msgs")
    messages = [json.loads(raw) for raw in stored]
    assert {m["actor_name"] for m in messages} <= {contract.ACTOR_TRAIN_CHARACTER}
    return [contract.TrainingJob.from_message(m["kwargs"]["job"]) for m in messages]


def _send_event(job_id: str, sequence: int, kind: str, **fields) -> None:
    """What the GPU worker sends back: a JobEvent message of the training-event actor."""
    event = contract.JobEvent(
        job_id=job_id, sequence=sequence, kind=kind, job_type=contract.JOB_TYPE_TRAINING, **fields
    )
    broker = dramatiq.get_broker()
    broker.enqueue(
        dramatiq.Message(
            queue_name=contract.QUEUE_JOB_EVENTS,
            actor_name=contract.ACTOR_JOB_EVENT,
            args=(event.to_message(),),
            kwargs={},
            options={},
        )
    )


def _wait(me, character_id: str, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = me(TRAINING_STATE, {"id": character_id})["data"]["character"]
        if state["status"] == status:
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def _routes(transactional_db) -> None:
    routes_ensure_shipped(ModelRoute)  # a transactional test starts with empty tables


@pytest.fixture
def trained_ready(account, django_worker, local_storage):
    """A user with 100 more credits and a Soul ID of 10 accepted, distinct photos."""
    me = account()
    credits_grant(user=me.user, amount=100, reason="test")
    character_id = me.character_id()
    assert me.add(character_id, me.uploads(shots()[:10]))["__typename"] == "CharacterPayload"
    assert me.wait_checked(character_id)["acceptedPhotoCount"] == 10
    return me, character_id


def test_not_enough_photos_says_how_many_and_holds_nothing(account, django_worker, local_storage):
    me = account()
    character_id = me.character_id()
    me.add(character_id, me.uploads([*shots()[:3], shots()[0]]))
    assert me.wait_checked(character_id)["status"] == "NEEDS_PHOTOS"
    result = me(TRAIN, {"id": character_id})["data"]["trainCharacter"]
    assert result["__typename"] == "NotEnoughPhotos"
    assert (result["code"], result["required"], result["accepted"]) == ("NOT_ENOUGH_PHOTOS", 10, 3)
    assert not TrainingRun.objects.exists()
    assert Wallet.objects.get(user=me.user).held == 0


def test_without_enough_credits_nothing_is_held_or_queued(trained_ready, settings):
    me, character_id = trained_ready
    settings.CHARACTERS_TRAINING_CREDITS = 500
    result = me(TRAIN, {"id": character_id})["data"]["trainCharacter"]
    assert result["__typename"] == "InsufficientCredits"
    assert (result["required"], result["balance"]) == (500, 120)
    assert not TrainingRun.objects.exists()
    assert Character.objects.get().status == "COLLECTING"
    assert _queued_training_jobs() == []


def test_train_queues_a_job_then_progress_then_ready_with_a_push(trained_ready):
    me, character_id = trained_ready
    registered = me(REGISTER_DEVICE)["data"]["registerDevice"]
    assert registered["__typename"] == "DevicePayload", registered
    result = me(TRAIN, {"id": character_id})["data"]["trainCharacter"]
    assert result["__typename"] == "CharacterPayload", result
    assert result["character"]["status"] == "TRAINING"
    wallet = Wallet.objects.get(user=me.user)
    assert (wallet.balance, wallet.held) == (80, 40)  # 20 welcome + 100 granted, 40 held

    again = me(TRAIN, {"id": character_id})["data"]["trainCharacter"]
    assert again["__typename"] == "ValidationError"
    assert TrainingRun.objects.count() == 1

    character = Character.objects.get()
    [job] = _queued_training_jobs()
    assert job.job_id == str(character.pk) and job.attempt == 1
    assert job.route.name == "wan2.2-ti2v-5b" and job.family == "wan22"
    crops = set(character.photos.filter(status="ACCEPTED").values_list("crop_key", flat=True))
    assert set(job.photo_keys) == crops and len(crops) == 10
    assert job.output_prefix.startswith(character.prefix)

    _send_event(
        job.job_id, 10, "progress", stage="TRAINING", progress=0.5, step=500, total_steps=1000, eta_seconds=90
    )
    deadline = time.monotonic() + 30
    while Character.objects.get().training_step != 500:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    state = me(TRAINING_STATE, {"id": character_id})["data"]["character"]
    assert state == {
        "status": "TRAINING",
        "trainingProgress": 0.5,
        "trainingStep": 500,
        "trainingTotalSteps": 1000,
        "trainingEtaSeconds": 90,
        "failureMessage": None,
    }

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
        "photos": 10,
        "steps": job.steps,
        "seed": job.seed,
        "first_loss": 0.5,
        "final_loss": 0.1,
    }
    _send_event(job.job_id, 9, "progress", progress=0.1)  # stale: dropped
    _send_event(job.job_id, 20, "completed", progress=1.0, outputs=outputs)
    state = _wait(me, character_id, "READY")
    assert state["trainingProgress"] == 1.0
    character = Character.objects.get()
    assert character.lora_key == job.lora_key
    assert character.lora_metadata["base_checkpoint"] == "Wan2.2-TI2V-5B-Diffusers"
    assert character.thumbnail_key == f"{character.prefix}thumbnail.jpg"
    wallet = Wallet.objects.get(user=me.user)
    assert (wallet.balance, wallet.held) == (80, 0)
    assert TrainingRun.objects.get().status == "SUCCEEDED"
    assert list(PushMessage.objects.values_list("kind", flat=True)) == ["CHARACTER_READY"]

    # Generations may now use its LoRA.
    from apps.characters.selectors import character_lora_key_for_user

    assert character_lora_key_for_user(user=me.user, character_id=character.pk) == job.lora_key


def test_a_failed_training_releases_the_credits_and_can_be_retried(trained_ready):
    me, character_id = trained_ready
    assert me(TRAIN, {"id": character_id})["data"]["trainCharacter"]["__typename"] == "CharacterPayload"
    [job] = _queued_training_jobs()
    _send_event(
        job.job_id, 5, "failed", reason_code="OUT_OF_MEMORY", retryable=False, message="It did not fit."
    )
    state = _wait(me, character_id, "FAILED")
    assert state["failureMessage"] == "It did not fit."
    wallet = Wallet.objects.get(user=me.user)
    assert (wallet.balance, wallet.held) == (120, 0)
    retried = me(TRAIN, {"id": character_id})["data"]["trainCharacter"]
    assert retried["__typename"] == "CharacterPayload"
    assert sorted(TrainingRun.objects.values_list("attempt", "status")) == [(1, "FAILED"), (2, "RUNNING")]
    wallet = Wallet.objects.get(user=me.user)
    assert (wallet.balance, wallet.held) == (80, 40)


def test_deleting_during_training_cancels_it_and_charges_nothing(trained_ready):
    me, character_id = trained_ready
    assert me(TRAIN, {"id": character_id})["data"]["trainCharacter"]["__typename"] == "CharacterPayload"
    [job] = _queued_training_jobs()
    broker = dramatiq.get_broker()
    assert not broker.client.exists(contract.cancel_key(job.job_id))
    deleted = me(DELETE, {"id": character_id})["data"]["deleteCharacter"]
    assert deleted["__typename"] == "DeletePayload"
    assert broker.client.exists(contract.cancel_key(job.job_id))  # the GPU worker stops within a step
    wallet = Wallet.objects.get(user=me.user)
    assert (wallet.balance, wallet.held) == (120, 0)
    # The worker finishes anyway and uploads its weights: they are removed, nothing comes back.
    deadline = time.monotonic() + 30
    while Character.objects.exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    get_storage().write(job.lora_key, b"late weights", content_type=contract.LORA_CONTENT_TYPE)
    lora = {"key": job.lora_key, "content_type": contract.LORA_CONTENT_TYPE, "bytes": 12, "sha256": "cd"}
    _send_event(job.job_id, 30, "completed", progress=1.0, outputs={"lora": lora})
    while get_storage().list_keys(job.output_prefix):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert Wallet.objects.get(user=me.user).balance == 120
