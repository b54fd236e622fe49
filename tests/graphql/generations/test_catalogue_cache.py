"""The catalogue a create is checked against (model routes, price rules, blocked terms) comes from each
process's copy (apps/core/table_cache.py); a curator's change is seen by the very next create, in this
process and in every other one (the table's version token in the shared cache).

Each test first makes one create so that the process holds the table, then changes it the way a writer
does (a save, as admin's forms and management commands do; a queryset update, as the worker's route
timings do; a bulk create), and creates again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db import connection

from apps.generations.models import ModelRoute, PriceRule
from apps.moderation.models import BlockedTerm, Category
from tests.graphql.generations.helpers import CREATE, a_trend, generation_from, key, wallet

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def alice(sign_up, settings):
    settings.WELCOME_CREDITS = 100
    settings.GENERATIONS_MAX_ACTIVE_PER_USER = 10
    settings.GENERATIONS_ROUTE_OVERRIDE = ""  # route by the trend
    return sign_up()["accessToken"]


def _create(gql, token, **fields) -> dict:
    fields.setdefault("idempotencyKey", key())
    return gql(CREATE, {"input": fields}, token=token)["data"]["createGeneration"]


def _route_of(result: dict) -> str:
    assert result["__typename"] == "GenerationPayload", result
    return generation_from(result["generation"]["id"]).route_name


def test_a_route_disabled_by_a_save_is_not_chosen_by_the_next_create(gql, alice, shipped_routes):
    trend = a_trend(requires="NONE", preferred_model_route="wan2.2-ti2v-5b")
    assert _route_of(_create(gql, alice, trendSlug=trend.slug, quality="STANDARD")) == "wan2.2-ti2v-5b"
    route = ModelRoute.objects.get(name="wan2.2-ti2v-5b")
    route.enabled = False
    route.save()  # what admin's change form does
    assert _route_of(_create(gql, alice, trendSlug=trend.slug, quality="STANDARD")) == "ltx-video"


def test_a_route_changed_by_a_queryset_update_is_seen_by_the_next_create(gql, alice, shipped_routes):
    trend = a_trend(requires="NONE", preferred_model_route="ltx-video")  # ltx-video: DRAFT and STANDARD
    assert _route_of(_create(gql, alice, trendSlug=trend.slug, quality="DRAFT")) == "ltx-video"
    ModelRoute.objects.filter(name="ltx-video").update(quality_tiers=["STANDARD"])  # no signal sent
    refused = _create(gql, alice, trendSlug=trend.slug, quality="DRAFT")
    assert (refused["__typename"], refused["field"]) == ("UnsupportedOption", "quality")


def test_a_route_deleted_is_not_chosen_by_the_next_create(gql, alice, shipped_routes):
    trend = a_trend(requires="NONE", preferred_model_route="ltx-video")
    assert _route_of(_create(gql, alice, trendSlug=trend.slug, quality="DRAFT")) == "ltx-video"
    ModelRoute.objects.get(name="ltx-video").delete()
    refused = _create(gql, alice, trendSlug=trend.slug, quality="DRAFT")
    assert refused["__typename"] == "UnsupportedOption"


def test_a_price_rule_added_then_disabled_prices_the_next_creates(gql, alice, shipped_routes, sign_up):
    trend = a_trend(requires="NONE", preferred_model_route="tiny-wan", price_draft=3)
    first = _create(gql, alice, trendSlug=trend.slug, quality="DRAFT")
    assert generation_from(first["generation"]["id"]).quoted_credits == 3
    rule = PriceRule(route=shipped_routes["tiny-wan"], quality="DRAFT", multiplier=2, add_credits=1)
    rule.full_clean()
    rule.save()  # what admin's add form does
    doubled = _create(gql, alice, trendSlug=trend.slug, quality="DRAFT")
    assert generation_from(doubled["generation"]["id"]).quoted_credits == 7
    assert wallet(generation_from(doubled["generation"]["id"]).owner) == (90, 10)  # (balance, held)
    PriceRule.objects.filter(pk=rule.pk).update(enabled=False)
    again = _create(gql, alice, trendSlug=trend.slug, quality="DRAFT")
    assert generation_from(again["generation"]["id"]).quoted_credits == 3


def test_a_blocked_term_added_refuses_the_next_create_and_holds_nothing(gql, alice, shipped_routes):
    assert _create(gql, alice, prompt="a knight in a blood bath", quality="DRAFT")["__typename"] == (
        "GenerationPayload"
    )
    term = BlockedTerm(term="blood bath", category=Category.VIOLENCE)
    term.full_clean()
    term.save()
    refused = _create(gql, alice, prompt="a knight in a blood bath", quality="DRAFT")
    assert (refused["__typename"], refused["code"]) == ("ModerationRefused", "MODERATION")
    user = generation_from(
        _create(gql, alice, prompt="a knight at dawn", quality="DRAFT")["generation"]["id"]
    ).owner
    assert user.generations.count() == 2  # the refused one made nothing


def test_blocked_terms_added_in_bulk_refuse_the_next_create(gql, alice, shipped_routes):
    assert _create(gql, alice, prompt="a tiger at dusk", quality="DRAFT")["__typename"] == "GenerationPayload"
    BlockedTerm.objects.bulk_create(
        [BlockedTerm(term="tiger", normalized="tiger", category=Category.OTHER)]
    )  # no signal sent
    refused = _create(gql, alice, prompt="a tiger at dusk", quality="DRAFT")
    assert refused["__typename"] == "ModerationRefused"


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_change_made_by_another_process_is_seen_by_the_next_create(gql, alice, shipped_routes):
    """Another process (a management command, an admin server, a worker) changes the table: only the
    version token in the shared cache (Redis) tells this process, which held the old rows."""
    if "REDIS_URL" not in os.environ:
        pytest.skip("the processes share a version token only through Redis")
    trend = a_trend(requires="NONE", preferred_model_route="wan2.2-ti2v-5b")
    assert _route_of(_create(gql, alice, trendSlug=trend.slug, quality="STANDARD")) == "wan2.2-ti2v-5b"
    database_url = urlsplit(os.environ["DATABASE_URL"])._replace(path="/" + connection.settings_dict["NAME"])
    script = (
        "import django; django.setup()\n"
        "from apps.generations.models import ModelRoute\n"
        "route = ModelRoute.objects.get(name='wan2.2-ti2v-5b')\n"
        "route.enabled = False\n"
        "route.save()\n"
    )
    subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": database_url.geturl(),
            "DJANGO_SETTINGS_MODULE": "backend.settings",
        },
        check=True,
        timeout=120,
    )
    assert _route_of(_create(gql, alice, trendSlug=trend.slug, quality="STANDARD")) == "ltx-video"


def test_a_price_rule_reaches_the_trend_cards_at_once(gql, shipped_routes):
    # The cards price from the same process copies as quotes (no minute-long copy of their own).
    trend = a_trend(requires="NONE", preferred_model_route="tiny-wan", price_draft=3)
    query = f'{{ trend(slug: "{trend.slug}") {{ prices {{ quality credits }} }} }}'

    def draft() -> int:
        prices = gql(query)["data"]["trend"]["prices"]
        return next(p["credits"] for p in prices if p["quality"] == "DRAFT")

    assert draft() == 3
    rule = PriceRule(route=shipped_routes["tiny-wan"], quality="DRAFT", multiplier=2, add_credits=1)
    rule.full_clean()
    rule.save()
    assert draft() == 7
    PriceRule.objects.filter(pk=rule.pk).update(enabled=False)
    assert draft() == 3
