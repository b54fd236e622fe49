"""Render profiles per route and tier: what the shipped routes render, what admin refuses, what a job
message carries, and the sizes, clip lengths, ETAs and prices that follow each tier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

import gpu_worker.contract as contract
from apps.core.errors import ValidationFailed
from apps.generations.jobs import generation_job
from apps.generations.models import Generation, ModelRoute
from apps.generations.routing import job_fits, job_size, route_durations_beyond, run_seconds
from apps.trends.services import trend_publish, trend_publish_problems
from tests.graphql.generations.helpers import a_trend

pytestmark = pytest.mark.django_db

TIERS = ("DRAFT", "STANDARD", "CINEMA")


@pytest.mark.parametrize("name", ["tiny-wan", "wan2.2-ti2v-5b", "ltx-video"])
def test_every_shipped_route_renders_draft_cheaper_and_cinema_no_cheaper_than_standard(shipped_routes, name):
    route = shipped_routes[name]
    route.full_clean()  # its profiles pass admin's checks
    cost = {tier: route.profile(tier).unit_cost(route.family) for tier in TIERS}
    assert cost["DRAFT"] < cost["STANDARD"] <= cost["CINEMA"]
    standard = route.profile("STANDARD")
    assert (standard.width, standard.height, standard.steps) == (route.width, route.height, route.steps)
    assert route.spec("CINEMA").speedups.cache is None  # no lossy cache at CINEMA


def test_the_tiny_route_draft_is_smaller_with_fewer_steps_than_cinema(shipped_routes):
    tiny = shipped_routes["tiny-wan"]
    draft, cinema = tiny.profile("DRAFT"), tiny.profile("CINEMA")
    assert draft.width * draft.height < cinema.width * cinema.height and draft.steps < cinema.steps
    assert "DRAFT" in shipped_routes["wan2.2-ti2v-5b"].quality_tiers  # a draft on the final's family
    wan_draft = shipped_routes["wan2.2-ti2v-5b"].spec("DRAFT")
    assert wan_draft.speedups.cache == "taylorseer" and wan_draft.scheduler["config"] == {"flow_shift": 3.0}


def test_clip_lengths_stay_within_what_the_model_was_trained_on(shipped_routes):
    wan = shipped_routes["wan2.2-ti2v-5b"]
    for tier in TIERS:
        five = job_size(wan, aspect_ratio="PORTRAIT_9_16", duration_seconds=5, quality=tier)
        eight = job_size(wan, aspect_ratio="PORTRAIT_9_16", duration_seconds=8, quality=tier)
        assert job_fits(wan, width=five[0], height=five[1], num_frames=five[2], quality=tier)
        assert not job_fits(wan, width=eight[0], height=eight[1], num_frames=eight[2], quality=tier)
    assert job_size(wan, aspect_ratio="PORTRAIT_9_16", duration_seconds=5, quality="DRAFT") == (352, 640, 121)


def test_a_trend_offers_only_lengths_its_route_renders(shipped_routes):
    # What each shipped route renders at every tier it offers (max_frames at the tier's fps)
    assert route_durations_beyond("wan2.2-ti2v-5b", [3, 5, 8, 10]) == ([8, 10], 5.0)
    assert route_durations_beyond("ltx-video", [5, 8, 10]) == ([], 10.0)
    assert route_durations_beyond("tiny-wan", [5, 8, 10, 11]) == ([11], 10.0)
    # A trend on Wan 2.2 offering 8 s cannot go live; curators are told what to change.
    trend = a_trend(preferred_model_route="wan2.2-ti2v-5b", durations=[5, 8], status="draft")
    assert trend_publish_problems(trend=trend) == [
        "The model route wan2.2-ti2v-5b renders clips up to 5 s (what its model was trained on): remove 8 s "
        "from the durations, or choose a route that renders them."
    ]
    with pytest.raises(ValidationFailed, match="remove 8 s from the durations"):
        trend_publish(trend=trend, actor="curator")
    trend.durations = [5]
    trend.save(update_fields=["durations"])
    assert trend_publish(trend=trend, actor="curator") is True


def test_every_catalogue_trend_offers_lengths_its_route_renders(shipped_routes):
    catalogue = json.loads((Path(__file__).parents[3] / "fixtures/trends/catalogue.json").read_text())
    for row in catalogue["trends"]:
        beyond, _ = route_durations_beyond(row["preferred_model_route"], row["durations"])
        assert beyond == [], row["slug"]


@pytest.mark.parametrize(
    ("profiles", "says"),
    [
        ({"ULTRA": {}}, "Unknown tiers: ULTRA"),
        (
            {"DRAFT": {"width": 40, "height": 32, "fps": 8, "max_frames": 17, "steps": 1, "guidance": 5.0}},
            "DRAFT: width and height must be multiples of 16",
        ),
        (
            {"DRAFT": {"width": 64, "height": 64, "fps": 8, "max_frames": 41, "steps": 4, "guidance": 5.0}},
            "DRAFT must cost less than STANDARD",
        ),
        (
            {"CINEMA": {"width": 64, "height": 64, "fps": 8, "max_frames": 41, "steps": 2, "guidance": 5.0}},
            "CINEMA must cost at least as much as STANDARD",
        ),
        (
            {
                "CINEMA": {
                    "width": 64,
                    "height": 64,
                    "fps": 8,
                    "max_frames": 41,
                    "steps": 8,
                    "guidance": 5.0,
                    "speed_profile": {"cache": "first_block"},
                }
            },
            "CINEMA renders without a step cache",
        ),
        (
            {
                "STANDARD": {
                    "width": 64,
                    "height": 64,
                    "fps": 8,
                    "max_frames": 161,
                    "steps": 4,
                    "guidance": 5.0,
                }
            },
            "STANDARD: max_frames 161 is beyond the model's range",
        ),
        (
            {"STANDARD": {"width": 64, "height": 64, "fps": 8, "steps": 4, "guidance": 5.0}},
            "STANDARD: malformed render profile",
        ),
    ],
)
def test_admin_refuses_a_bad_render_profile_with_what_to_fix(shipped_routes, profiles, says):
    route = shipped_routes["tiny-wan"]
    route.render_profiles = {**route.render_profiles, **profiles}
    with pytest.raises(ValidationError) as refused:
        route.full_clean()
    assert says in " ".join(refused.value.message_dict["render_profiles"])


def test_a_route_without_profiles_gets_defaults_from_its_native_settings(shipped_routes):
    route = shipped_routes["tiny-wan"]
    route.render_profiles = {}
    route.speed_profile = {"cache": "first_block"}
    route.full_clean()
    draft, standard, cinema = (route.profile(tier) for tier in TIERS)
    assert (draft.width, draft.height, draft.steps) == (32, 32, 2)
    assert (standard.width, standard.height, standard.steps) == (64, 64, 4)
    assert cinema.steps == 6 and route.spec("CINEMA").speedups.cache is None
    assert route.spec("DRAFT").speedups.cache == "first_block"


def _jobs_per_tier(tiny: ModelRoute) -> dict[str, contract.GenerationJob]:
    """One generation per tier on the route `tiny`, and its job message as a worker reads it."""
    from tests.graphql.generations.helpers import a_trend

    trend = a_trend()
    jobs = {}
    for tier in TIERS:
        width, height, frames = job_size(tiny, aspect_ratio="SQUARE_1_1", duration_seconds=5, quality=tier)
        generation = Generation.objects.create(
            owner=_user(),
            trend=trend,
            prompt="a dancer on a rooftop",
            aspect_ratio="SQUARE_1_1",
            duration_seconds=5,
            quality=tier,
            lane="INSTANT",
            seed=11,
            quoted_credits=1,
            route=tiny,
            route_name=tiny.name,
            width=width,
            height=height,
            num_frames=frames,
            queued_at="2026-12-04T00:00:00Z",
            idempotency_key=f"k-{tier}",
            request_hash="h",
        )
        jobs[tier] = contract.GenerationJob.from_message(generation_job(generation).to_message())
    return jobs


def test_the_job_message_names_the_tier_and_carries_its_settings(shipped_routes):
    jobs = _jobs_per_tier(shipped_routes["tiny-wan"])
    assert {tier: job.tier for tier, job in jobs.items()} == {tier: tier for tier in TIERS}
    assert [job.route.steps for job in jobs.values()] == [2, 4, 8]
    assert [(job.width, job.height) for job in jobs.values()] == [(32, 32), (64, 64), (64, 64)]
    assert len({job.seed for job in jobs.values()}) == 1


def test_drafts_carry_the_visible_mark_and_paid_tiers_do_not_by_default(shipped_routes, settings):
    settings.GENERATIONS_WATERMARK_TEXT = "Made with AI"

    jobs = _jobs_per_tier(shipped_routes["tiny-wan"])

    assert {tier: job.watermark for tier, job in jobs.items()} == {
        "DRAFT": "Made with AI",
        "STANDARD": None,
        "CINEMA": None,
    }


def test_admin_turns_the_mark_on_or_off_per_tier_in_the_routes_render_profiles(shipped_routes):
    tiny = shipped_routes["tiny-wan"]
    profiles = {tier: tiny.profile(tier).to_dict() for tier in TIERS}
    profiles["DRAFT"]["watermark"] = False
    profiles["CINEMA"]["watermark"] = True
    tiny.render_profiles = profiles
    tiny.full_clean()
    tiny.save()

    jobs = _jobs_per_tier(tiny)

    assert {tier: job.watermark for tier, job in jobs.items()} == {
        "DRAFT": None,
        "STANDARD": None,
        "CINEMA": "AI generated",
    }


def test_admin_refuses_a_watermark_that_is_not_true_false_or_null(shipped_routes):
    tiny = shipped_routes["tiny-wan"]
    tiny.render_profiles = {"DRAFT": {**tiny.profile("DRAFT").to_dict(), "watermark": "yes"}}
    with pytest.raises(ValidationError) as refused:
        tiny.full_clean()
    assert "DRAFT: watermark must be true, false or null" in " ".join(
        refused.value.message_dict["render_profiles"]
    )


def test_run_time_follows_the_tiers_steps(shipped_routes):
    wan = shipped_routes["wan2.2-ti2v-5b"]
    seconds = {}
    for tier in TIERS:
        width, height, frames = job_size(wan, aspect_ratio="PORTRAIT_9_16", duration_seconds=5, quality=tier)
        seconds[tier] = run_seconds(wan, width=width, height=height, num_frames=frames, quality=tier)
    assert seconds["DRAFT"] < seconds["STANDARD"] < seconds["CINEMA"]
    per_step = wan.seconds_per_step
    assert seconds["CINEMA"] == pytest.approx(70 * per_step + wan.overhead_seconds)


def _user():
    from apps.accounts.models import User

    return User.objects.create_user(
        email=f"u{User.objects.count()}@example.com", password="x-long-password-1"
    )


def test_model_route_table_round_trips_through_the_contract(shipped_routes):
    for route in ModelRoute.objects.all():
        for tier in TIERS:
            spec = route.spec(tier)
            assert contract.RouteSpec.from_dict(spec.__dict__ | {}) == spec
