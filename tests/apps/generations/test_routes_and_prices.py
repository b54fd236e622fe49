"""Model routes (the shipped ones, their rules, routing, job sizes) and price rules, and their admin."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from apps.core.errors import UnsupportedOption
from apps.generations.models import ModelRoute, PriceRule
from apps.generations.pricing import clip_cost, price_credits
from apps.generations.routing import job_size, route_choose, route_fallback
from apps.generations.shipped import SHIPPED_ROUTE_NAMES, routes_ensure_shipped
from apps.trends.services import known_model_routes
from gpu_worker import contract
from tests.graphql.generations.helpers import a_trend

pytestmark = pytest.mark.django_db


def test_the_migration_ships_three_routes_and_the_command_puts_back_missing_ones():
    routes = {route.name: route for route in ModelRoute.objects.select_related("fallback")}
    if not routes:  # a flushed database: the migration's rows were removed by an earlier test
        routes_ensure_shipped(ModelRoute)
        routes = {route.name: route for route in ModelRoute.objects.select_related("fallback")}
    assert set(routes) == set(SHIPPED_ROUTE_NAMES) == {"tiny-wan", "wan2.2-ti2v-5b", "ltx-video"}
    tiny, wan, ltx = routes["tiny-wan"], routes["wan2.2-ti2v-5b"], routes["ltx-video"]
    assert (tiny.device, tiny.checkpoint, tiny.enabled) == ("cpu", "", True)
    assert (wan.device, wan.family, wan.fallback, wan.enabled) == ("cuda", "wan22", ltx, True)
    assert (ltx.device, ltx.family, ltx.enabled) == ("cuda", "ltx", True)
    for route in routes.values():
        route.full_clean()
        contract.RouteSpec(**route.spec().__dict__)  # the contract accepts what the table holds
    ModelRoute.objects.filter(name="ltx-video").delete()
    assert routes_ensure_shipped(ModelRoute) == 1
    assert known_model_routes() == set(SHIPPED_ROUTE_NAMES)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"width": 1000}, "width"),  # wan22 sizes are multiples of 32
        ({"frames": 120}, "frames"),  # 4k+1
        ({"checkpoint": "../elsewhere"}, "checkpoint"),
        ({"checkpoint": ""}, "checkpoint"),
        ({"quality_tiers": ["ULTRA"]}, "quality_tiers"),
        ({"lanes": []}, "lanes"),
    ],
)
def test_route_rules_say_what_to_fix(shipped_routes, changes, field):
    route = shipped_routes["wan2.2-ti2v-5b"]
    for name, value in changes.items():
        setattr(route, name, value)
    with pytest.raises(ValidationError) as error:
        route.full_clean()
    assert field in error.value.message_dict


def test_a_fallback_chain_may_not_loop(shipped_routes):
    ltx = shipped_routes["ltx-video"]
    ltx.fallback = shipped_routes["wan2.2-ti2v-5b"]
    with pytest.raises(ValidationError) as error:
        ltx.full_clean()
    assert "fallback" in error.value.message_dict


def test_routing_by_preference_tier_lane_and_inputs(shipped_routes, settings):
    settings.GENERATIONS_ROUTE_OVERRIDE = ""
    trend = a_trend(preferred_model_route="wan2.2-ti2v-5b")

    def choose(**kwargs):
        options = {
            "trend": trend,
            "quality": "STANDARD",
            "lane": "INSTANT",
            "needs_image": True,
            "needs_lora": False,
        }
        return route_choose(**{**options, **kwargs}).name

    assert choose() == "wan2.2-ti2v-5b"
    assert choose(quality="DRAFT") == "wan2.2-ti2v-5b"  # a draft on the same model family as its final
    ModelRoute.objects.filter(name="wan2.2-ti2v-5b").update(quality_tiers=["STANDARD", "CINEMA"])
    assert choose(quality="DRAFT") == "ltx-video"  # a tier the preferred route does not offer: its fallback
    ModelRoute.objects.filter(name="wan2.2-ti2v-5b").update(lanes=["INSTANT"])
    assert choose(lane="ECONOMY") == "ltx-video"
    ModelRoute.objects.filter(name="ltx-video").update(image_conditioning=False)
    with pytest.raises(UnsupportedOption) as refused:
        choose(lane="ECONOMY")
    assert refused.value.field == "speed"
    assert choose(lane="ECONOMY", needs_image=False) == "ltx-video"
    # Never a route outside the preferred chain, however available.
    ModelRoute.objects.filter(name__in=["wan2.2-ti2v-5b", "ltx-video"]).update(enabled=False)
    with pytest.raises(UnsupportedOption):
        choose()
    # The embedded mode's override sends everything to tiny-wan.
    settings.GENERATIONS_ROUTE_OVERRIDE = "tiny-wan"
    assert choose() == "tiny-wan"


def test_the_fallback_skips_disabled_routes_and_those_that_cannot_take_the_inputs(shipped_routes):
    wan = shipped_routes["wan2.2-ti2v-5b"]
    assert route_fallback(wan, needs_image=True, needs_lora=False).name == "ltx-video"
    ModelRoute.objects.filter(name="ltx-video").update(lora_support=False)
    wan.refresh_from_db()
    assert route_fallback(wan, needs_image=True, needs_lora=True) is None
    assert route_fallback(shipped_routes["ltx-video"], needs_image=False, needs_lora=False) is None


@pytest.mark.parametrize(
    ("route", "aspect", "seconds", "size"),
    [
        ("wan2.2-ti2v-5b", "PORTRAIT_9_16", 5, (704, 1280, 121)),
        ("wan2.2-ti2v-5b", "LANDSCAPE_16_9", 8, (1280, 704, 193)),
        ("wan2.2-ti2v-5b", "SQUARE_1_1", 5, (960, 960, 121)),
        ("ltx-video", "PORTRAIT_9_16", 5, (704, 1216, 121)),
        ("tiny-wan", "PORTRAIT_9_16", 5, (48, 80, 41)),
        ("tiny-wan", "SQUARE_1_1", 8, (64, 64, 65)),
    ],
)
def test_job_sizes_follow_the_contract(shipped_routes, route, aspect, seconds, size):
    assert job_size(shipped_routes[route], aspect_ratio=aspect, duration_seconds=seconds) == size


def test_prices_follow_the_render_cost_with_the_trend_price_as_minimum(shipped_routes, settings):
    settings.GENERATIONS_ECONOMY_DISCOUNT_PERCENT = 25
    cheap = a_trend(price_draft=1, price_standard=1, price_cinema=1)  # minimums below every render
    trend = a_trend(price_draft=1, price_standard=4, price_cinema=10)
    wan, ltx = shipped_routes["wan2.2-ti2v-5b"], shipped_routes["ltx-video"]

    def price(quality="STANDARD", duration=5, lane="INSTANT", route=wan, on=trend):
        return price_credits(trend=on, route=route, quality=quality, duration_seconds=duration, lane=lane)

    # The render's cost: steps x latent tokens at the tier's profile (Wan 2.2: 1280x704 -> 40x22 tokens a
    # latent frame, 121 frames -> 31 latent frames), times the route's credits per million, half up.
    assert clip_cost(route=wan, quality="STANDARD", duration_seconds=5) == 50 * 40 * 22 * 31 == 1_364_000
    assert clip_cost(route=wan, quality="CINEMA", duration_seconds=5) == 70 * 40 * 22 * 31
    assert clip_cost(route=wan, quality="DRAFT", duration_seconds=5) == 20 * 20 * 11 * 31
    assert wan.credits_per_million_cost == Decimal("3")
    # 0.41 -> 0, under the minimum of 1; 4.09 -> 4; 5.73 -> 6
    assert (price("DRAFT", on=cheap), price(on=cheap), price("CINEMA", on=cheap)) == (1, 4, 6)
    # LTX at 40 per million: DRAFT (768x448) 1.72 -> 2, STANDARD 4.28 -> 4; longer clips cost more
    assert [price(q, route=ltx, on=cheap) for q in ("DRAFT", "STANDARD")] == [2, 4]
    assert [price(route=ltx, on=cheap, duration=d) for d in (5, 8, 10)] == [4, 7, 8]
    # The trend's price is the minimum: its CINEMA at 10 beats the render's 6.
    assert (price("DRAFT"), price(), price("CINEMA")) == (1, 4, 10)
    assert price(lane="ECONOMY") == 3 and price("DRAFT", lane="ECONOMY") == 1  # never below 1
    # The admin's price per unit moves every price of the route.
    wan.credits_per_million_cost = Decimal("6")
    wan.save(update_fields=["credits_per_million_cost"])
    assert price(on=cheap) == 8 and price("CINEMA", on=cheap) == 11
    # A route priced at 0 has no render price: the trend's price alone.
    ltx.credits_per_million_cost = Decimal("0")
    assert price(route=ltx, duration=10) == 4
    ltx.credits_per_million_cost = Decimal("40")

    # Rules adjust the base (render price or minimum, whichever is higher).
    any_route = PriceRule.objects.create(duration_seconds=8, multiplier=Decimal("1.5"))
    this_route = PriceRule.objects.create(
        route=ltx, duration_seconds=8, multiplier=Decimal("2"), add_credits=1
    )
    assert price(route=ltx, duration=8) == 15  # the route's rule wins: 7 x 2 + 1
    assert price(route=ltx, duration=8, lane="ECONOMY") == 12  # 15, less 25% (3)
    tiny = shipped_routes["tiny-wan"]
    assert price(route=tiny, duration=8, on=cheap) == 9  # 1088 x 5700 / 1e6 = 6.2 -> 6, x 1.5
    this_route.enabled = False
    this_route.save()
    assert price(route=ltx, duration=8) == 11  # 7 x 1.5 = 10.5, half up
    PriceRule.objects.create(route=wan, quality="STANDARD", add_credits=-10)
    assert price() == 1  # never below 1
    settings.GENERATIONS_PROMPT_PRICES = {"DRAFT": 1, "STANDARD": 9, "CINEMA": 20}
    assert price(on=None, route=ltx) == 9  # a free prompt's minimum
    assert price(on=None, route=ltx, duration=10) == 9
    with pytest.raises(ValidationError):  # the same route, tier and duration as an enabled rule
        PriceRule(duration_seconds=any_route.duration_seconds, multiplier=Decimal("3")).full_clean()


@pytest.fixture
def staff_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("admin@example.com", "a-long-test-password-42")
    client.force_login(admin)
    return client


def test_admin_edits_routes_and_prices_and_lists_generations(staff_client, shipped_routes):
    wan = shipped_routes["wan2.2-ti2v-5b"]
    assert staff_client.get("/admin/generations/modelroute/").status_code == 200
    page = staff_client.get(f"/admin/generations/modelroute/{wan.pk}/change/")
    assert page.status_code == 200 and b"Wan2.2-TI2V-5B-Diffusers" in page.content
    assert staff_client.get("/admin/generations/pricerule/add/").status_code == 200
    response = staff_client.post(
        "/admin/generations/pricerule/add/",
        {"route": wan.pk, "quality": "CINEMA", "duration_seconds": 8, "multiplier": "1.25", "add_credits": 0,
         "enabled": "on", "note": "longer cinema clips"},
    )  # fmt: skip
    assert response.status_code == 302, response.content
    assert PriceRule.objects.get().multiplier == Decimal("1.250")
    for state in ("", "?state=active", "?state=FAILED", "?state=deleted"):
        assert staff_client.get(f"/admin/generations/generation/{state}").status_code == 200
