import pytest

from gpu_worker.contract import CONTRACT_VERSION, GPU_QUEUES, ContractError, JobEvent


def test_an_event_survives_the_round_trip_through_a_message():
    event = JobEvent(
        job_id="g1",
        sequence=3,
        kind="completed",
        progress=1.0,
        outputs={"video": "k.mp4"},
        timings={"denoise": 1.5},
    )
    assert JobEvent.from_message(event.to_message()) == event
    assert event.is_terminal


def test_an_unknown_version_is_refused_not_guessed():
    message = JobEvent(job_id="g1", sequence=1, kind="progress", progress=0.5).to_message()
    message["version"] = CONTRACT_VERSION + 1
    with pytest.raises(ContractError, match="unsupported event version"):
        JobEvent.from_message(message)


@pytest.mark.parametrize(("kind", "progress"), [("exploded", 0.1), ("progress", 1.5), ("progress", -0.1)])
def test_malformed_events_are_refused(kind, progress):
    with pytest.raises(ContractError):
        JobEvent(job_id="g1", sequence=1, kind=kind, progress=progress)


def test_django_actors_never_sit_on_a_gpu_lane():
    import dramatiq

    from apps.core.queues import DJANGO_QUEUES

    # In the embedded mode the GPU actor is declared on the same broker (backend/embedded.py), so the
    # guarantee is about Django's actors and the queue list Django workers consume.
    broker = dramatiq.get_broker()
    actors = [broker.get_actor(name) for name in broker.get_declared_actors()]
    django_queues = {actor.queue_name for actor in actors if actor.fn.__module__.startswith("apps.")}
    assert django_queues, "no Django actor declared"
    assert django_queues <= set(DJANGO_QUEUES)
    assert not django_queues & set(GPU_QUEUES)
    # backend.worker and the embedded worker consume exactly DJANGO_QUEUES: never a GPU lane.
    assert not set(DJANGO_QUEUES) & set(GPU_QUEUES)


# --- Generation jobs (GenerationJob) -----------------------------------------------------------

from gpu_worker import contract  # noqa: E402
from gpu_worker.contract import GenerationJob, RouteSpec  # noqa: E402


def _route(**overrides):
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


def _job(**overrides):
    fields = dict(
        job_id="g1",
        route=_route(),
        prompt="a woman smiling, golden hour",
        negative_prompt="blurry",
        seed=42,
        aspect_ratio="9:16",
        width=704,
        height=1280,
        num_frames=121,
        output_prefix="generations/g1/a1",
        image_key="uploads/u1/selfie",
        lora_key="characters/c1/lora.safetensors",
        lora_scale=0.8,
        attempt=2,
    )
    return GenerationJob(**{**fields, **overrides})


def test_a_job_survives_the_round_trip_through_a_json_message():
    import json

    job = _job()
    message = json.loads(json.dumps(job.to_message()))  # what the broker carries
    assert GenerationJob.from_message(message) == job
    assert message["route"]["family"] == "wan22" and message["version"] == CONTRACT_VERSION
    assert (job.video_key, job.poster_key) == ("generations/g1/a1/video.mp4", "generations/g1/a1/poster.jpg")
    assert job.duration_seconds == pytest.approx(121 / 24)


def test_a_job_of_an_unknown_version_is_refused_and_unknown_fields_are_ignored():
    message = _job().to_message()
    message["added_later"] = "ignored"
    assert GenerationJob.from_message(message) == _job()
    message["version"] = CONTRACT_VERSION + 1
    with pytest.raises(ContractError, match="unsupported job version"):
        GenerationJob.from_message(message)
    with pytest.raises(ContractError, match="must be a dict"):
        GenerationJob.from_message(["not", "a", "dict"])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 2**63}, "seed"),
        ({"seed": True}, "seed"),
        ({"job_id": ""}, "job_id"),
        ({"prompt": "  "}, "prompt"),
        ({"prompt": "x" * 4001}, "4000"),
        ({"aspect_ratio": "4:3"}, "aspect ratio"),
        ({"width": 0}, "width"),
        ({"num_frames": 12.5}, "num_frames"),
        ({"image_key": "../etc/passwd"}, "image_key"),
        ({"lora_key": "/abs/path"}, "lora_key"),
        ({"output_prefix": "a/../b"}, "output_prefix"),
        ({"lora_scale": 3}, "lora_scale"),
        ({"attempt": 0}, "attempt"),
        ({"route": {"name": "x", "family": "sdxl"}}, "route"),
    ],
)
def test_malformed_jobs_are_refused(change, match):
    message = _job().to_message()
    message.update(change)
    with pytest.raises(ContractError, match=match):
        GenerationJob.from_message(message)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"family": "sdxl"}, "unknown pipeline family"),
        ({"checkpoint": "../../etc"}, "checkpoint"),
        ({"steps": 0}, "steps"),
        ({"guidance": -1.0}, "guidance"),
        ({"lora_support": "yes"}, "lora_support"),
    ],
)
def test_malformed_routes_are_refused(change, match):
    with pytest.raises(ContractError, match=match):
        _route(**change)


def test_a_missing_field_is_a_contract_error():
    message = _job().to_message()
    del message["prompt"]
    with pytest.raises(ContractError, match="malformed job message"):
        GenerationJob.from_message(message)


def test_output_sizes_follow_the_route_and_the_aspect_ratio():
    wan = contract.FAMILIES[contract.FAMILY_WAN22].size_multiple
    assert contract.output_size("16:9", native_width=1280, native_height=704, size_multiple=wan) == (
        1280,
        704,
    )
    assert contract.output_size("9:16", native_width=1280, native_height=704, size_multiple=wan) == (
        704,
        1280,
    )
    assert contract.output_size("1:1", native_width=1280, native_height=704, size_multiple=wan) == (960, 960)
    tiny = contract.FAMILIES[contract.FAMILY_TINY_WAN].size_multiple
    assert contract.output_size("16:9", native_width=64, native_height=64, size_multiple=tiny) == (80, 48)
    assert contract.output_size("9:16", native_width=64, native_height=64, size_multiple=tiny) == (48, 80)
    assert contract.output_size("1:1", native_width=64, native_height=64, size_multiple=tiny) == (64, 64)
    with pytest.raises(ContractError):
        contract.output_size("4:3", native_width=64, native_height=64, size_multiple=tiny)


def test_frame_counts_for_a_duration_fit_the_family():
    assert contract.frames_for_duration(5, fps=24, frame_multiple=4) == 121
    assert contract.frames_for_duration(5, fps=24, frame_multiple=8) == 121
    assert contract.frames_for_duration(3, fps=16, frame_multiple=4) == 49
    assert contract.frames_for_duration(2, fps=8, frame_multiple=4) == 17
    assert contract.frames_for_duration(0.1, fps=8, frame_multiple=4) == 5  # never fewer than one block


def test_reason_codes_say_which_failures_are_retried():
    assert {code for code in contract.REASON_CODES if contract.is_retryable(code)} == {
        contract.OUT_OF_MEMORY,
        contract.WORKER_LOST,
        contract.MODEL_UNAVAILABLE,
        contract.TIMED_OUT,
        contract.INTERNAL,
    }
    for code in (contract.BAD_INPUT, contract.MODERATION, contract.QUALITY_FAILED, contract.CANCELED):
        assert not contract.is_retryable(code)


def test_stages_are_the_api_generation_stages_the_worker_reports():
    assert contract.STAGES == (
        "LOADING_MODEL",
        "DENOISING",
        "DECODING",
        "ENCODING",
        "QUALITY_CHECK",
        "UPLOADING",
    )
    with pytest.raises(ContractError, match="unknown stage"):
        JobEvent(job_id="g1", sequence=1, kind="stage", stage="PAINTING")
    with pytest.raises(ContractError, match="reason_code"):
        JobEvent(job_id="g1", sequence=1, kind="failed")
    with pytest.raises(ContractError, match="unknown reason code"):
        JobEvent(job_id="g1", sequence=1, kind="failed", reason_code="OOPS")


def test_the_backend_builds_the_lane_message_from_the_contract():
    import dramatiq

    job = _job()
    message = dramatiq.Message(**contract.generation_message_fields(job, lane=contract.LANE_ECONOMY))
    assert (message.queue_name, message.actor_name) == (
        contract.QUEUE_GPU_ECONOMY,
        contract.ACTOR_RUN_GENERATION,
    )
    assert GenerationJob.from_message(dramatiq.Message.decode(message.encode()).kwargs["job"]) == job
    assert contract.generation_message_fields(job, lane="INSTANT")["queue_name"] == contract.QUEUE_GPU_INSTANT
    with pytest.raises(ContractError, match="unknown lane"):
        contract.generation_message_fields(job, lane="TURBO")
    assert contract.GENERATION_QUEUES_BY_PRIORITY == (contract.QUEUE_GPU_INSTANT, contract.QUEUE_GPU_ECONOMY)
    assert contract.cancel_key("g1") == "gpu:cancel:g1"


# --- A route's speed profile -----------------------------------------------------------------------


def test_a_routes_speed_profile_travels_in_the_job_message_and_defaults_to_none():
    profile = {"attention_backend": "flash", "cache": "taylorseer", "cache_params": {"cache_interval": 4}}
    job = _job(route=_route(speed_profile=profile))

    read = GenerationJob.from_message(job.to_message())

    assert read.route.speed_profile == profile
    assert read.route.speedups.cache_params["cache_interval"] == 4
    message = _job().to_message()
    del message["route"]["speed_profile"]  # a backend that predates the field
    assert GenerationJob.from_message(message).route.speed_profile == {}
    assert contract.CONTRACT_VERSION == 2  # bumped by the tier (version 2), not by this field


@pytest.mark.parametrize(
    ("profile", "match"),
    [
        ({"attention_backend": "flash_hub"}, "attention_backend must be null or one of"),
        ({"cache": "teacache"}, "cache must be null or one of"),
        ({"cache": "mag"}, "needs cache_params.mag_ratios"),
        ({"tf32": "yes"}, "tf32 must be true or false"),
        ({"turbo": True}, "unknown speed profile fields: turbo"),
        ("fast", "route.speed_profile must be a mapping"),
    ],
)
def test_a_bad_speed_profile_breaks_the_contract(profile, match):
    with pytest.raises(ContractError, match=match):
        _route(speed_profile=profile)


def test_the_speed_profile_of_the_contract_is_the_one_the_worker_applies():
    from gpu_worker import speedups

    assert speedups.SpeedProfile is contract.SpeedProfile


# --- A distilled route: its scheduler and whether a LoRA stacks on it --------------------------------


def test_a_routes_scheduler_and_lora_stacking_travel_in_the_job_message_with_defaults():
    scheduler = {"class": "UniPCMultistepScheduler", "config": {"flow_shift": 3.0, "use_flow_sigmas": True}}
    job = _job(route=_route(scheduler=scheduler, lora_stacking=False, steps=4, guidance=1.0))

    read = GenerationJob.from_message(job.to_message())

    assert read.route.scheduler == scheduler
    assert (read.route.lora_stacking, read.route.takes_lora) == (False, False)
    message = _job().to_message()
    del message["route"]["scheduler"], message["route"]["lora_stacking"]  # a backend that predates them
    route = GenerationJob.from_message(message).route
    assert (route.scheduler, route.lora_stacking, route.takes_lora) == ({}, True, True)
    assert _route(scheduler={"class": "FlowMatchEulerDiscreteScheduler"}).scheduler == {
        "class": "FlowMatchEulerDiscreteScheduler",
        "config": {},
    }
    assert contract.CONTRACT_VERSION == 2  # bumped by the tier (version 2), not by this field


@pytest.mark.parametrize(
    ("scheduler", "match"),
    [
        ({"class": "LCMScheduler"}, "scheduler.class must be one of"),
        ({"config": {"shift": 3.0}}, "scheduler.class must be one of"),
        ({"class": "UniPCMultistepScheduler", "kwargs": {}}, "unknown scheduler fields: kwargs"),
        ({"class": "UniPCMultistepScheduler", "config": [1]}, "scheduler.config must be a mapping"),
        ({"class": "UniPCMultistepScheduler", "config": {"_class_name": "X"}}, "lower-case config name"),
        ({"class": "UniPCMultistepScheduler", "config": {"shift": float("nan")}}, "must be a JSON value"),
        ({"class": "UniPCMultistepScheduler", "config": {"shift": object()}}, "must be a JSON value"),
        ("unipc", "route.scheduler must be a mapping"),
    ],
)
def test_a_bad_scheduler_breaks_the_contract(scheduler, match):
    with pytest.raises(ContractError, match=match):
        _route(scheduler=scheduler)


def test_lora_stacking_must_be_a_boolean_and_a_lora_does_not_fit_a_route_that_refuses_it():
    with pytest.raises(ContractError, match="route.lora_stacking must be a boolean"):
        _route(lora_stacking="no")
    route = _route()
    fits = dict(family=route.family, base_checkpoint=route.checkpoint)
    assert contract.lora_fits_route(route, **fits)
    assert not contract.lora_fits_route(_route(lora_stacking=False), **fits)
