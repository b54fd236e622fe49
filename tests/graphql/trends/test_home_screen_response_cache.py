"""The home screen's response cache (graphql_schema/response_cache.py): a repeated `homeScreen` is answered
without executing, per audience and user segment, and a curator's change shows on the next request."""

from __future__ import annotations

import hashlib
import json

import pytest

from apps.accounts.models import User
from apps.credits.services import credits_grant
from apps.trends import cache as screen_cache
from apps.trends import selectors
from apps.trends.models import Trend
from apps.trends.services import trend_save
from tests.apps.trends.helpers import make_section

from .test_home_screen import catalogue  # noqa: F401 - the shared fixture

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalogue")]

HOME = """
query Home($platform: Platform!, $appVersion: String!) {
  homeScreen(platform: $platform, appVersion: $appVersion) {
    sections {
      __typename
      ... on HomeSection { id title }
      ... on HeroSection { trends { slug title viewerHasFavorited } }
      ... on TrendGridSection { trends { slug viewerHasFavorited } }
      ... on TrendCarouselSection { trends { slug } }
    }
  }
}
"""
IOS = {"platform": "IOS", "appVersion": "2.0"}


@pytest.fixture
def executions(monkeypatch):
    """How many times the home screen was read by an executing resolver (a cached answer reads nothing)."""
    calls = []
    read = selectors.home_screen_get

    def counting(**kwargs):
        calls.append(kwargs)
        return read(**kwargs)

    monkeypatch.setattr(selectors, "home_screen_get", counting)
    return calls


def sections(gql, variables=IOS, token=None, query=HOME) -> dict:
    result = gql(query, variables, token=token)
    assert "errors" not in result, result
    return {
        s["title"]: [t["slug"] for t in s.get("trends", [])] for s in result["data"]["homeScreen"]["sections"]
    }


def test_a_repeated_home_screen_is_answered_from_the_cache_with_the_same_bytes(gql, executions):
    first = gql.raw(HOME, IOS)
    second = gql.raw(HOME, IOS)
    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert second["Content-Type"] == first["Content-Type"]
    assert len(executions) == 1
    # Other variables are another answer.
    assert gql.raw(HOME, {"platform": "ANDROID", "appVersion": "2.0"}).status_code == 200
    assert len(executions) == 2


def test_a_curators_change_shows_on_the_next_request(gql, executions, django_capture_on_commit_callbacks):
    assert sections(gql)["Featured"] == ["vertigo", "rain"]
    rain = Trend.objects.get(slug="rain")
    rain.title = "Rain Dance Deluxe"
    with django_capture_on_commit_callbacks(execute=True):
        trend_save(trend=rain, actor="curator@example.com")
    hero = gql(HOME, IOS)["data"]["homeScreen"]["sections"][0]
    assert [t["title"] for t in hero["trends"]] == ["Vertigo", "Rain Dance Deluxe"]
    assert len(executions) == 2


def test_users_share_answers_by_segment_and_a_favorite_makes_a_new_one(gql, sign_up, executions):
    make_section("grid", title="For you", sort_order=65, source="for_you", max_items=3)
    alice, bob = sign_up()["accessToken"], sign_up()["accessToken"]
    anonymous = sections(gql)
    assert sections(gql, token=alice) == sections(gql, token=bob) == anonymous
    # Signed out is one answer, and two users without favorites, Soul ID or video share another.
    assert len(executions) == 2

    favorite = gql('mutation { favoriteTrend(slug: "vertigo") { __typename } }', token=alice)
    assert favorite["data"]["favoriteTrend"] == {"__typename": "FavoriteTrendPayload"}
    result = gql(HOME, IOS, token=alice)
    hero = result["data"]["homeScreen"]["sections"][0]
    assert hero["trends"][0] == {"slug": "vertigo", "title": "Vertigo", "viewerHasFavorited": True}
    mine = {
        s["title"]: [t["slug"] for t in s.get("trends", [])] for s in result["data"]["homeScreen"]["sections"]
    }
    assert mine["For you"] == ["noir", "ballet", "rain"]
    # Bob's answer is not Alice's.
    bob_hero = gql(HOME, IOS, token=bob)["data"]["homeScreen"]["sections"][0]
    assert bob_hero["trends"][0]["viewerHasFavorited"] is False
    assert sections(gql, token=bob)["For you"] == anonymous["For you"]


def test_a_document_that_reads_more_than_the_home_screen_is_never_reused(gql, sign_up, executions):
    auth = sign_up()
    query = (
        'query { homeScreen(platform: IOS, appVersion: "2.0") { sections { __typename } } me { credits } }'
    )
    before = gql(query, token=auth["accessToken"])["data"]["me"]["credits"]
    credits_grant(user=User.objects.get(email=auth["user"]["email"]), amount=5, reason="test")
    assert gql(query, token=auth["accessToken"])["data"]["me"]["credits"] == before + 5
    assert len(executions) == 2


def test_an_answer_with_errors_is_not_stored(gql, executions):
    bad = {"platform": "IOS", "appVersion": "two"}
    for _ in range(2):
        (error,) = gql(HOME, bad)["errors"]
        assert error["extensions"]["field"] == "appVersion"
    assert len(executions) == 0  # refused before reading the screen, both times


def test_with_the_screen_cache_off_every_request_executes(gql, executions, settings):
    settings.TRENDS_SCREEN_CACHE_SECONDS = 0
    screen_cache.screen_cache_invalidate()
    first = sections(gql)
    assert sections(gql) == first
    assert len(executions) == 2
    # and nothing is kept: a screen that expires as it is built is not stored (each held 200 trends)
    assert not screen_cache._entries and not screen_cache._responses


def test_a_rejected_token_is_never_answered_from_the_cache(gql, executions):
    sections(gql)
    gql.raw(HOME, IOS, token="not-a-token")
    assert len(executions) == 2


def test_a_persisted_home_screen_over_get_is_cached_and_answers_304(client, executions):
    digest = hashlib.sha256(HOME.encode()).hexdigest()
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    registered = client.post(
        "/graphql",
        json.dumps({"query": HOME, "variables": IOS, "extensions": extensions}),
        content_type="application/json",
    )
    assert registered.status_code == 200
    params = {"extensions": json.dumps(extensions), "variables": json.dumps(IOS)}
    first = client.get("/graphql", params)
    assert first.status_code == 200
    assert first.content == registered.content
    assert client.get("/graphql", params, HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 304
    assert len(executions) == 1


def test_an_answer_from_the_cache_is_still_counted_in_the_operation_metrics(gql, executions):
    from apps.core.metrics import GRAPHQL_OPERATIONS

    def counted() -> float:
        return GRAPHQL_OPERATIONS.labels(operation="Home", type="query")._value.get()

    before = counted()
    gql.raw(HOME, IOS)
    gql.raw(HOME, IOS)
    assert len(executions) == 1  # the second was the cache's
    assert counted() == before + 2
