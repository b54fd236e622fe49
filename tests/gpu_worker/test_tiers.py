"""Quality tiers in the job contract (version 2) and in what the worker renders.

The backend sends a job's route rendered at its tier (`route_for_tier`) with `tier` named; a version-1
message has no tier and keeps its meaning (the route's own settings). The worker runs what it is sent and
records the settings in the completed event's timings (`render`).
"""

from __future__ import annotations

import pytest

import gpu_worker.contract as contract
from gpu_worker.contract import ContractError, GenerationJob, RenderProfile, route_for_tier
from tests.fixtures.gpu import make_job, tiny_route

DRAFT = RenderProfile(width=32, height=32, fps=8, max_frames=33, steps=2, guidance=5.0)
CINEMA = RenderProfile(
    width=64, height=64, fps=8, max_frames=33, steps=6, guidance=5.0, refine_steps=3, refine_strength=0.4
)


# --- The contract ---------------------------------------------------------------------------------


def test_a_version_2_job_carries_its_tier_and_the_route_rendered_at_it():
    route = route_for_tier(tiny_route(steps=4), DRAFT)
    job = make_job(route=route, tier="DRAFT")

    message = job.to_message()
    read = GenerationJob.from_message(message)

    assert message["version"] == contract.CONTRACT_VERSION == 2
    assert (read.tier, read.route.steps, read.route.fps) == ("DRAFT", 2, 8)
    assert (read.route.width, read.route.height) == (64, 64)  # the native size stays: it bounds the jobs


def test_a_version_1_job_is_still_accepted_and_means_the_routes_own_settings():
    message = make_job(route=tiny_route(steps=4)).to_message()
    message["version"] = 1
    message.pop("tier")  # a backend of version 1 never sent one

    read = GenerationJob.from_message(message)

    assert (read.version, read.tier, read.route.steps) == (1, None, 4)
    message["tier"] = "CINEMA"  # an unknown field to a version-1 reader: ignored, as version 1 meant
    assert GenerationJob.from_message(message).tier is None


def test_a_job_of_an_unknown_version_or_tier_breaks_the_contract():
    message = make_job().to_message()
    message["version"] = 3
    with pytest.raises(ContractError, match="unsupported job version 3"):
        GenerationJob.from_message(message)
    with pytest.raises(ContractError, match="tier must be one of DRAFT, STANDARD, CINEMA"):
        make_job(tier="ULTRA")


def test_route_for_tier_takes_the_profiles_steps_guidance_scheduler_and_speed_ups():
    scheduler = {"class": "UniPCMultistepScheduler", "config": {"flow_shift": 3.0}}
    speed = {"cache": "first_block", "cache_params": {"threshold": 0.1}}
    profile = RenderProfile(
        width=32,
        height=32,
        fps=8,
        max_frames=17,
        steps=2,
        guidance=3.5,
        scheduler=scheduler,
        speed_profile=speed,
    )
    route = route_for_tier(tiny_route(speed_profile={"tf32": True}), profile)
    assert (route.steps, route.guidance, route.scheduler) == (2, 3.5, scheduler)
    assert route.speedups.cache == "first_block" and route.speedups.tf32 is False  # the tier's, whole
    kept = route_for_tier(tiny_route(speed_profile={"tf32": True}), DRAFT)
    assert kept.speed_profile == {"tf32": True} and kept.scheduler == {}  # none named: the route's


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"guidance": -1}, "guidance must be a number >= 0"),
        ({"scheduler": {"class": "LCMScheduler"}}, "scheduler.class must be one of"),
        ({"speed_profile": {"cache": "teacache"}}, "speed_profile: cache must be null or one of"),
        ({"turbo": True}, "unknown render profile fields: turbo"),
        ({"refine_steps": -1}, "refine_steps must be an integer from 0 to 50"),
    ],
)
def test_a_bad_render_profile_says_what_is_wrong(fields, match):
    data = {**DRAFT.to_dict(), **fields}
    with pytest.raises(ContractError, match=match):
        RenderProfile.from_dict(data)


def test_a_profile_must_stay_within_what_the_model_was_trained_on():
    RenderProfile(width=64, height=64, fps=8, max_frames=33, steps=4, guidance=5.0).check_for(
        "tiny-wan", native_width=64, native_height=64, native_frames=17
    )
    with pytest.raises(ContractError, match="multiples of 16"):
        RenderProfile(width=40, height=32, fps=8, max_frames=17, steps=1, guidance=5.0).check_for(
            "tiny-wan", native_width=64, native_height=64, native_frames=17
        )
    with pytest.raises(ContractError, match="beyond the model's range"):
        RenderProfile(width=128, height=128, fps=8, max_frames=17, steps=1, guidance=5.0).check_for(
            "tiny-wan", native_width=64, native_height=64, native_frames=17
        )
    with pytest.raises(ContractError, match="refine_strength must be above 0 and below 1"):
        RenderProfile(
            width=64,
            height=64,
            fps=8,
            max_frames=17,
            steps=4,
            guidance=5.0,
            refine_steps=2,
            refine_strength=1,
        ).check_for("tiny-wan", native_width=64, native_height=64, native_frames=17)
    with pytest.raises(ContractError, match="ltx has no refine pass"):
        RenderProfile(
            width=64,
            height=64,
            fps=8,
            max_frames=17,
            steps=4,
            guidance=1.0,
            refine_steps=2,
            refine_strength=0.5,
        ).check_for("ltx", native_width=64, native_height=64, native_frames=17)
    with pytest.raises(ContractError, match="max_frames 41 is beyond"):
        RenderProfile(width=64, height=64, fps=8, max_frames=41, steps=1, guidance=5.0).check_for(
            "tiny-wan", native_width=64, native_height=64, native_frames=17
        )


def test_cost_is_steps_times_latent_tokens():
    # tiny-wan: 16 px per token side, 4 frames per latent frame (+1)
    assert contract.latent_tokens("tiny-wan", width=64, height=32, num_frames=9) == 4 * 2 * 3
    assert DRAFT.unit_cost("tiny-wan") == 2 * 2 * 2
    assert CINEMA.unit_cost("tiny-wan") == (6 + 3) * 4 * 4  # the refine pass's steps count
    # Wan 2.2 at 1280x704, 121 frames: 40 x 22 tokens x 31 latent frames
    assert contract.latent_tokens("wan22", width=1280, height=704, num_frames=121) == 40 * 22 * 31


# --- What the worker renders ----------------------------------------------------------------------


def test_the_worker_renders_each_tier_with_its_profile_and_records_it(runner, event_log, storage):
    native = tiny_route(steps=4)
    draft = make_job(route=route_for_tier(native, DRAFT), tier="DRAFT", width=32, height=32, num_frames=9)
    cinema = make_job(
        route=route_for_tier(native, CINEMA),
        tier="CINEMA",
        width=64,
        height=64,
        num_frames=9,
        seed=draft.seed,
    )

    done = {job.tier: runner.run(job) for job in (draft, cinema)}

    assert {tier: event.kind for tier, event in done.items()} == {"DRAFT": "completed", "CINEMA": "completed"}
    rendered = {tier: event.timings["render"] for tier, event in done.items()}
    assert rendered["DRAFT"] == {
        "tier": "DRAFT",
        "width": 32,
        "height": 32,
        "num_frames": 9,
        "fps": 8,
        "steps": 2,
        "refine_steps": 0,
        "refine_strength": 0.0,
        "guidance": 5.0,
        "scheduler": None,
        "latent_tokens": 2 * 2 * 3,
        "cost": 2 * 2 * 2 * 3,
    }
    cinema_rendered = rendered["CINEMA"]
    assert {
        k: cinema_rendered[k] for k in ("steps", "refine_steps", "refine_strength", "width", "height")
    } == {
        "steps": 6,
        "refine_steps": 3,
        "refine_strength": 0.4,
        "width": 64,
        "height": 64,
    }
    assert cinema_rendered["cost"] == (6 + 3) * 4 * 4 * 3 > rendered["DRAFT"]["cost"]
    # The refine pass ran, timed apart (part of denoise); the draft has none
    assert 0 < done["CINEMA"].timings["denoise_refine"] < done["CINEMA"].timings["denoise"]
    assert "denoise_refine" not in done["DRAFT"].timings
    # The steps really ran: one progress event per step (throttling is off in the fixture)
    progress = {
        job.tier: [e for e in event_log.of(job.job_id) if e.kind == "progress"] for job in (draft, cinema)
    }
    assert (len(progress["DRAFT"]), len(progress["CINEMA"])) == (2, 6 + 3)
    videos = {tier: event.outputs["video"] for tier, event in done.items()}
    assert (videos["DRAFT"]["width"], videos["CINEMA"]["width"]) == (32, 64)
    assert done["DRAFT"].outputs["seed"] == done["CINEMA"].outputs["seed"] == draft.seed


def test_a_drafts_step_cache_is_off_again_for_the_cinema_job_after_it(runner):
    native = tiny_route(steps=4)
    cached = RenderProfile(
        width=32,
        height=32,
        fps=8,
        max_frames=33,
        steps=4,
        guidance=5.0,
        speed_profile={"cache": "first_block", "cache_params": {"threshold": 0.2}},
    )
    no_cache = RenderProfile(
        width=64, height=64, fps=8, max_frames=33, steps=6, guidance=5.0, speed_profile={}
    )
    draft = runner.run(make_job(route=route_for_tier(native, cached), tier="DRAFT", width=32, height=32))
    cinema = runner.run(make_job(route=route_for_tier(native, no_cache), tier="CINEMA", width=64, height=64))

    assert (draft.kind, cinema.kind) == ("completed", "completed")
    assert draft.timings["speed_profile"]["cache"] == "first_block"
    assert cinema.timings["speed_profile"]["cache"] is None  # the pipeline is the same; its cache is not
    assert (draft.timings["render"]["steps"], cinema.timings["render"]["steps"]) == (4, 6)


@pytest.mark.parametrize(
    "scheduler_class, config",
    [
        ("FlowMatchEulerDiscreteScheduler", {"shift": 7.0}),  # tiny-wan's
        (
            "UniPCMultistepScheduler",
            {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 5.0},
        ),  # Wan 2.2's
    ],
)
def test_the_refine_pass_runs_the_tail_of_its_schedule_down_to_no_noise(scheduler_class, config):
    import diffusers
    import torch

    from gpu_worker.pipelines.refine import _schedule_tail, refine_schedule_steps

    scheduler = getattr(diffusers, scheduler_class)(**config)
    full = refine_schedule_steps(4, 0.5)
    scheduler.set_timesteps(full)
    whole = scheduler.timesteps.clone()
    with _schedule_tail(scheduler, 4):
        scheduler.set_timesteps(full)  # as the pipeline asks for it
        assert torch.equal(scheduler.timesteps, whole[-4:]) and float(scheduler.sigmas[-1]) == 0.0
        sample = torch.randn(1, 4, 2, 2, 2)
        for timestep in scheduler.timesteps:  # every step of the tail runs (no index past the end)
            sample = scheduler.step(torch.zeros_like(sample), timestep, sample).prev_sample
    assert full == 8 and "set_timesteps" not in vars(scheduler)  # the scheduler's own method again
    scheduler.set_timesteps(full)
    assert len(scheduler.timesteps) == full
