"""The training part of the GPU contract: TrainingJob messages, the lane message, training events."""

from __future__ import annotations

import json

import dramatiq
import pytest

from gpu_worker import contract
from gpu_worker.contract import (
    ACTOR_JOB_EVENT,
    ACTOR_TRAIN_CHARACTER,
    CONTRACT_VERSION,
    JOB_TYPE_GENERATION,
    JOB_TYPE_TRAINING,
    QUEUE_GPU_TRAINING,
    ContractError,
    JobEvent,
    RouteSpec,
    TrainingJob,
)


def _route(**overrides) -> RouteSpec:
    fields = dict(
        name="wan22-ti2v-5b",
        family=contract.FAMILY_WAN22,
        checkpoint="Wan2.2-TI2V-5B-Diffusers",
        width=1280,
        height=704,
        fps=24,
        frames=121,
        steps=50,
        guidance=5.0,
        image_conditioning=True,
        lora_support=True,
    )
    return RouteSpec(**{**fields, **overrides})


def _job(**overrides) -> TrainingJob:
    fields = dict(
        job_id="5b0f2a52-8a57-4c43-9d4e-6a1f0d8e2c11",
        route=_route(),
        photo_keys=[f"characters/c1/crops/{i}.png" for i in range(12)],
        output_prefix="characters/c1/lora/2",
        seed=99,
        attempt=2,
        **contract.training_defaults(contract.FAMILY_WAN22),
    )
    return TrainingJob(**{**fields, **overrides})


def test_a_training_job_survives_the_round_trip_through_a_json_message():
    job = _job(trigger="ohwx woman", caption="a portrait photo of ohwx woman")
    message = json.loads(json.dumps(job.to_message()))  # what the broker carries

    assert TrainingJob.from_message(message) == job
    assert message["photo_keys"] == [f"characters/c1/crops/{i}.png" for i in range(12)]
    assert message["route"]["family"] == "wan22" and message["version"] == CONTRACT_VERSION
    assert job.photo_keys == tuple(message["photo_keys"])
    assert (job.family, job.base_checkpoint) == ("wan22", "Wan2.2-TI2V-5B-Diffusers")
    assert job.lora_key == "characters/c1/lora/2/pytorch_lora_weights.safetensors"
    assert job.prompt == "a portrait photo of ohwx woman"
    assert _job().prompt == "a photo of sks person"  # the default caption names the default trigger


def test_the_suggested_settings_per_family():
    assert contract.training_defaults("wan22") == {
        "steps": 250,
        "rank": 32,
        "learning_rate": 2e-4,
        "resolution": 512,
        "batch_size": 4,
    }
    tiny = contract.training_defaults("tiny-wan")
    assert tiny["resolution"] % contract.FAMILIES["tiny-wan"].size_multiple == 0
    with pytest.raises(ContractError, match="no LoRA training for family 'ltx'"):
        contract.training_defaults("ltx")


def test_the_backend_builds_the_training_lane_message_from_the_contract():
    job = _job()
    message = dramatiq.Message(**contract.training_message_fields(job))
    assert (message.queue_name, message.actor_name) == (QUEUE_GPU_TRAINING, ACTOR_TRAIN_CHARACTER)
    assert TrainingJob.from_message(dramatiq.Message.decode(message.encode()).kwargs["job"]) == job
    assert contract.GPU_QUEUES_BY_PRIORITY == (
        contract.QUEUE_GPU_INSTANT,
        contract.QUEUE_GPU_ECONOMY,
        contract.QUEUE_GPU_TRAINING,
    )


def test_an_unknown_version_is_refused_and_unknown_fields_are_ignored():
    message = _job().to_message()
    message["added_later"] = 1
    assert TrainingJob.from_message(message) == _job()
    message["version"] = CONTRACT_VERSION + 1
    with pytest.raises(ContractError, match="unsupported training job version"):
        TrainingJob.from_message(message)
    message = _job().to_message()
    del message["photo_keys"]
    with pytest.raises(ContractError, match="malformed training job message"):
        TrainingJob.from_message(message)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"route": {**_route().__dict__, "family": "ltx", "checkpoint": "ltx"}}, "no LoRA training"),
        ({"route": {**_route().__dict__, "lora_support": False}}, "takes no LoRA"),
        ({"job_id": ""}, "job_id"),
        ({"attempt": 0}, "attempt"),
        ({"photo_keys": "characters/c1/crops/0.png"}, "photo_keys must be a list"),
        ({"photo_keys": ["characters/c1/crops/0.png", "../secret.png"]}, "photo_keys must be storage keys"),
        ({"photo_keys": ["a/b.png", "a/b.png"]}, "must not repeat"),
        ({"photo_keys": [f"c/{i}.png" for i in range(21)]}, "at most 20 photos"),
        ({"output_prefix": "/abs"}, "output_prefix"),
        ({"seed": -1}, "seed"),
        ({"steps": 0}, "steps"),
        ({"steps": 10**6}, "steps"),
        ({"rank": 0}, "rank"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"resolution": 500}, "multiple of 32"),
        ({"resolution": 4096}, "resolution"),
        ({"batch_size": 0}, "batch_size"),
        ({"trigger": "  "}, "trigger"),
        ({"trigger": "sks\nperson"}, "trigger"),
        ({"caption": "x" * 4001}, "caption"),
    ],
)
def test_malformed_training_jobs_are_refused(change, match):
    message = _job().to_message()
    message.update(change)
    with pytest.raises(ContractError, match=match):
        TrainingJob.from_message(message)


def test_too_few_photos_is_the_workers_call_not_the_contracts():
    """0 photos is a well-formed message: the worker fails it BAD_INPUT with an event the backend sees."""
    assert _job(photo_keys=[]).photo_keys == ()


def test_training_events_carry_their_type_stages_and_step_counts():
    event = JobEvent(
        job_id="c1",
        sequence=5,
        kind="progress",
        stage=contract.STAGE_TRAINING,
        progress=0.5,
        job_type=JOB_TYPE_TRAINING,
        step=10,
        total_steps=20,
        eta_seconds=3.5,
    )
    assert JobEvent.from_message(json.loads(json.dumps(event.to_message()))) == event
    for stage in contract.TRAINING_STAGES:
        JobEvent(job_id="c1", sequence=1, kind="stage", stage=stage, job_type=JOB_TYPE_TRAINING)
    assert contract.TRAINING_STAGES == ("PREPARING", "LOADING_MODEL", "TRAINING", "SAVING", "UPLOADING")
    with pytest.raises(ContractError, match="unknown job type"):
        JobEvent(job_id="c1", sequence=1, kind="progress", job_type="inference")
    with pytest.raises(ContractError, match="step"):
        JobEvent(job_id="c1", sequence=1, kind="progress", step=-1)
    with pytest.raises(ContractError, match="eta_seconds"):
        JobEvent(job_id="c1", sequence=1, kind="progress", eta_seconds=-2.0)


def test_an_event_from_an_older_worker_reads_as_a_generation_event():
    message = JobEvent(job_id="g1", sequence=1, kind="progress", progress=0.2).to_message()
    for name in ("job_type", "step", "total_steps", "eta_seconds"):
        del message[name]
    event = JobEvent.from_message(message)
    assert (event.job_type, event.step, event.total_steps, event.eta_seconds) == (
        JOB_TYPE_GENERATION,
        0,
        0,
        None,
    )
    assert contract.EVENT_ACTORS == {
        JOB_TYPE_GENERATION: ACTOR_JOB_EVENT,
        JOB_TYPE_TRAINING: ACTOR_JOB_EVENT,
    }


def test_a_lora_fits_only_routes_of_its_base_model():
    base = {"family": "wan22", "base_checkpoint": "Wan2.2-TI2V-5B-Diffusers"}
    assert contract.lora_fits_route(_route(name="wan22-fast", steps=8), **base)
    assert not contract.lora_fits_route(_route(checkpoint="Wan2.2-TI2V-5B-v2"), **base)
    assert not contract.lora_fits_route(_route(lora_support=False), **base)
    assert not contract.lora_fits_route(_route(family="ltx", checkpoint="Wan2.2-TI2V-5B-Diffusers"), **base)
