"""Engagement mutations: batched impressions, opens, shares, favorites; exact counters under concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db.models import Sum

from apps.accounts.models import User
from apps.accounts.tokens import access_token_issue
from apps.trends.models import Trend, TrendFavorite, TrendStat, TrendStatus
from tests.apps.trends.helpers import make_category, make_trend
from tests.fixtures.live import http_graphql

IMPRESSIONS = """mutation ($slugs: [String!]!) { recordTrendImpressions(slugs: $slugs) { __typename
  ... on TrendImpressionsRecorded { recorded ignored } ... on ValidationError { code field message } } }"""
OPEN = """mutation ($slug: String!) { recordTrendOpen(slug: $slug) {
  __typename ... on TrendPayload { trend { slug } } ... on Error { code message } } }"""
SHARE = """mutation ($slug: String!, $channel: String) { recordTrendShare(slug: $slug, channel: $channel) {
  __typename ... on TrendSharePayload { trend { slug } } ... on Error { code message } } }"""
FAVORITE = """mutation ($slug: String!) { favoriteTrend(slug: $slug) {
  __typename ... on FavoriteTrendPayload { favorited trend { slug favoritesCount viewerHasFavorited } }
  ... on Error { code message } } }"""
UNFAVORITE = FAVORITE.replace("favoriteTrend", "unfavoriteTrend")


def counters(slug: str) -> dict:
    trend = Trend.objects.get(slug=slug)
    return {
        "impressions": trend.impressions,
        "opens": trend.opens,
        "shares": trend.shares,
        "favorites": trend.favorites,
    }


def bucket_total(slug: str, counter: str) -> int:
    return TrendStat.objects.filter(trend__slug=slug).aggregate(total=Sum(counter))["total"] or 0


@pytest.fixture
def trends(db):
    dance = make_category("dance")
    return {
        "rain": make_trend(category=dance, slug="rain"),
        "disco": make_trend(category=dance, slug="disco"),
        "old": make_trend(category=dance, slug="old", status=TrendStatus.RETIRED),
    }


@pytest.mark.django_db
def test_impressions_count_once_per_live_trend_per_batch(gql, trends):
    result = gql(IMPRESSIONS, {"slugs": ["rain", "disco", "rain", "old", "no-such-trend"]})
    assert result["data"]["recordTrendImpressions"] == {
        "__typename": "TrendImpressionsRecorded",
        "recorded": 2,
        "ignored": 3,
    }
    assert counters("rain")["impressions"] == 1
    assert counters("disco")["impressions"] == 1
    assert counters("old")["impressions"] == 0
    assert bucket_total("rain", "impressions") == 1  # the hourly bucket the score is computed from
    gql(IMPRESSIONS, {"slugs": ["rain"]})
    assert counters("rain")["impressions"] == 2
    assert TrendStat.objects.filter(trend__slug="rain").count() == 1  # same hour, same row
    assert bucket_total("rain", "impressions") == 2


@pytest.mark.django_db
def test_too_many_impressions_at_once_are_refused_and_nothing_is_counted(gql, trends, settings):
    settings.TRENDS_IMPRESSIONS_MAX_BATCH = 3
    result = gql(IMPRESSIONS, {"slugs": ["rain", "disco", "rain", "disco"]})["data"]["recordTrendImpressions"]
    assert result["__typename"] == "ValidationError"
    assert result["code"] == "VALIDATION"
    assert result["field"] == "slugs"
    assert counters("rain")["impressions"] == counters("disco")["impressions"] == 0
    assert not TrendStat.objects.exists()


@pytest.mark.django_db
def test_opens_and_shares_are_counted_and_unknown_trends_are_not_found(gql, trends):
    assert gql(OPEN, {"slug": "rain"})["data"]["recordTrendOpen"] == {
        "__typename": "TrendPayload",
        "trend": {"slug": "rain"},
    }
    assert gql(SHARE, {"slug": "rain", "channel": "instagram"})["data"]["recordTrendShare"]["__typename"] == (
        "TrendSharePayload"
    )
    assert counters("rain") == {"impressions": 0, "opens": 1, "shares": 1, "favorites": 0}
    for slug in ("old", "nope"):
        refused = gql(SHARE, {"slug": slug})["data"]["recordTrendShare"]
        assert refused["__typename"] == "NotFound"
        assert refused["code"] == "NOT_FOUND"
    assert counters("old")["shares"] == 0
    bad = gql(SHARE, {"slug": "rain", "channel": "x" * 40})["data"]["recordTrendShare"]
    assert bad["__typename"] == "ValidationError"
    assert counters("rain")["shares"] == 1


@pytest.mark.django_db
def test_favorites_need_a_signed_in_user_and_count_once(gql, trends, sign_up):
    anonymous = gql(FAVORITE, {"slug": "rain"})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert counters("rain")["favorites"] == 0

    token = sign_up()["accessToken"]
    first = gql(FAVORITE, {"slug": "rain"}, token=token)["data"]["favoriteTrend"]
    again = gql(FAVORITE, {"slug": "rain"}, token=token)["data"]["favoriteTrend"]
    expected = {
        "__typename": "FavoriteTrendPayload",
        "favorited": True,
        "trend": {"slug": "rain", "favoritesCount": 1, "viewerHasFavorited": True},
    }
    assert first == again == expected
    assert TrendFavorite.objects.count() == 1

    removed = gql(UNFAVORITE, {"slug": "rain"}, token=token)["data"]["unfavoriteTrend"]
    assert removed["trend"] == {"slug": "rain", "favoritesCount": 0, "viewerHasFavorited": False}
    gql(UNFAVORITE, {"slug": "rain"}, token=token)
    assert counters("rain")["favorites"] == 0
    assert bucket_total("rain", "favorites") == 0

    assert gql(FAVORITE, {"slug": "old"}, token=token)["data"]["favoriteTrend"]["__typename"] == "NotFound"
    assert (
        gql(UNFAVORITE, {"slug": "nope"}, token=token)["data"]["unfavoriteTrend"]["__typename"] == "NotFound"
    )


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_lose_no_increment(asgi_server, trends):
    """Many clients at once, through a live server on PostgreSQL: every increment lands exactly once."""
    url = asgi_server.url
    # Users made directly (password hashing would dominate the run); their tokens are real access tokens.
    tokens = [
        access_token_issue(user_id=User.objects.create_user(email=f"fan{i}@example.com").id)[0]
        for i in range(12)
    ]
    batches, per_batch_shares = 60, 1

    def impressions(_):
        data = http_graphql(url, IMPRESSIONS, {"slugs": ["disco", "rain", "old"]})["data"]
        return data["recordTrendImpressions"]["recorded"]

    def share(_):
        return http_graphql(url, SHARE, {"slug": "rain", "channel": "tiktok"})["data"]["recordTrendShare"]

    def favorite(token):
        # Twice each, concurrently: the second must not count.
        first = http_graphql(url, FAVORITE, {"slug": "rain"}, token=token)["data"]["favoriteTrend"]
        second = http_graphql(url, FAVORITE, {"slug": "rain"}, token=token)["data"]["favoriteTrend"]
        return first["__typename"], second["__typename"]

    with ThreadPoolExecutor(max_workers=12) as pool:
        recorded = list(pool.map(impressions, range(batches)))
        shared = list(pool.map(share, range(batches * per_batch_shares)))
        favorited = list(pool.map(favorite, tokens + tokens))

    assert recorded == [2] * batches
    assert {s["__typename"] for s in shared} == {"TrendSharePayload"}
    assert set(favorited) == {("FavoriteTrendPayload", "FavoriteTrendPayload")}
    assert counters("rain") == {"impressions": batches, "opens": 0, "shares": batches, "favorites": 12}
    assert counters("disco")["impressions"] == batches
    assert bucket_total("rain", "impressions") == batches
    assert bucket_total("rain", "shares") == batches
    assert bucket_total("rain", "favorites") == 12
    assert TrendFavorite.objects.count() == 12
