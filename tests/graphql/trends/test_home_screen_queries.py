"""The home screen costs the same number of SQL queries whether it holds 10 trends or 200."""

from __future__ import annotations

import pytest

from apps.trends.models import Trend
from tests.apps.trends.helpers import make_category, make_section, make_trend

pytestmark = pytest.mark.django_db

HOME = """
query ($platform: Platform!, $appVersion: String!) {
  homeScreen(platform: $platform, appVersion: $appVersion, locale: "en") {
    sections {
      __typename
      ... on HomeSection { id title }
      ... on HeroSection { trends { ...card } }
      ... on TrendCarouselSection { trends { ...card } category { slug } }
      ... on TrendGridSection { trends { ...card } }
      ... on CategoryChipsSection { categories { slug title } }
      ... on SoulIdPromptSection { actionUrl }
    }
  }
}
fragment card on Trend {
  id slug title category { slug title } coverImage { url width height } prices { quality credits }
  cinematic { movement } viewerHasFavorited
}
"""

# sections, section support, live trends, hand-picked items, every category (the trends' and sections'
# own, read once rather than joined per trend), and for the
# cards' prices the model routes and the price rules (apps/generations/pricing.py trend_card_prices)
SHARED_SCREEN_QUERIES = 7
# the user's favorites (for you), whether they have a Soul ID, favorited flags; the bearer token's user
# comes from the auth cache (apps/accounts/auth_cache.py), warm since the user's previous request
PER_USER_QUERIES = 3
# the response cache's key for a signed-in user (their segment): favorites, a usable Soul ID, a video
SEGMENT_QUERIES = 3


def _screen(n_trends: int) -> None:
    categories = [make_category(f"cat-{i}", f"Category {i}", sort_order=i) for i in range(4)]
    trends = [
        make_trend(
            category=categories[i % 4], slug=f"t-{i:03d}", trending_score=i / 1000, published_hours_ago=i
        )
        for i in range(n_trends)
    ]
    make_section("hero", title="Featured", sort_order=1, items=trends[:5])
    make_section("category_chips", title="Browse", sort_order=2)
    make_section("carousel", title="Trending", sort_order=3, source="trending", max_items=20)
    make_section("carousel", title="New", sort_order=4, source="new_today", max_items=20)
    make_section(
        "grid", title="Category 1", sort_order=5, source="category", category=categories[1], max_items=50
    )
    make_section("grid", title="For you", sort_order=6, source="for_you", max_items=20)
    make_section("soul_id_prompt", title="Make it you", sort_order=7)
    make_section("grid", title="All", sort_order=8, source="trending", max_items=50)


@pytest.mark.parametrize("n_trends", [10, 200])
def test_query_count_is_constant_as_trends_grow(gql, django_assert_num_queries, n_trends):
    _screen(n_trends)
    variables = {"platform": "IOS", "appVersion": "2.0"}
    with django_assert_num_queries(SHARED_SCREEN_QUERIES):
        cold = gql(HOME, variables)
    sections = cold["data"]["homeScreen"]["sections"]
    assert len(sections) == 8
    assert len(sections[-1]["trends"]) == min(n_trends, 50)
    with django_assert_num_queries(0):  # warm: served from the cache
        warm = gql(HOME, variables)
    assert warm == cold


@pytest.mark.parametrize("n_trends", [10, 200])
def test_signed_in_query_count_is_constant_as_trends_grow(gql, sign_up, django_assert_num_queries, n_trends):
    _screen(n_trends)
    user = sign_up()
    liked = Trend.objects.order_by("slug")[3]
    gql(f'mutation {{ favoriteTrend(slug: "{liked.slug}") {{ __typename }} }}', token=user["accessToken"])
    variables = {"platform": "IOS", "appVersion": "2.0"}
    with django_assert_num_queries(SHARED_SCREEN_QUERIES + PER_USER_QUERIES + SEGMENT_QUERIES):
        cold = gql(HOME, variables, token=user["accessToken"])
    with django_assert_num_queries(SEGMENT_QUERIES):  # warm: the segment, then the cached answer
        warm = gql(HOME, variables, token=user["accessToken"])
    assert warm == cold
    flags = [
        t["viewerHasFavorited"] for s in cold["data"]["homeScreen"]["sections"] for t in s.get("trends", [])
    ]
    assert any(flags) and not all(flags)


def test_a_trend_in_an_inactive_category_shows_its_category_without_a_query_of_its_own(
    gql, django_assert_num_queries
):
    """Categories are read once and given to the trends (not joined per trend): a live trend whose
    category is switched off still shows it on its card (only the chips leave inactive ones out)."""
    shown = make_category("shown", "Shown", sort_order=1)
    hidden = make_category("hidden", "Hidden", sort_order=2, is_active=False)
    make_trend(category=shown, slug="t-shown", trending_score=0.2)
    make_trend(category=hidden, slug="t-hidden", trending_score=0.1)
    make_section("category_chips", title="Browse", sort_order=1)
    make_section("carousel", title="Trending", sort_order=2, source="trending", max_items=20)
    with django_assert_num_queries(SHARED_SCREEN_QUERIES - 1):  # no hand-picked section: no items query
        data = gql(HOME, {"platform": "IOS", "appVersion": "2.0"})["data"]["homeScreen"]["sections"]
    chips, trending = data
    assert [c["slug"] for c in chips["categories"]] == ["shown"]
    assert [(t["slug"], t["category"]) for t in trending["trends"]] == [
        ("t-shown", {"slug": "shown", "title": "Shown"}),
        ("t-hidden", {"slug": "hidden", "title": "Hidden"}),
    ]
