"""`trends` (a Relay connection with filters), `trend(slug)`, `node(id)`, and the demo catalogue."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from apps.trends.models import Category, FeedSection, Trend, TrendStatus
from tests.apps.trends.helpers import make_category, make_trend

pytestmark = pytest.mark.django_db

TRENDS = """query ($first: Int, $after: String, $category: String, $tag: String) {
  trends(first: $first, after: $after, category: $category, tag: $tag) {
    edges { cursor node { id slug } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}"""


@pytest.fixture
def catalogue(db):
    dance, film = make_category("dance"), make_category("film")
    for i in range(5):
        make_trend(category=dance, slug=f"dance-{i}", published_hours_ago=i, tags=["night"] if i % 2 else [])
    make_trend(category=film, slug="film-0", published_hours_ago=0.5, tags=["night", "noir"])
    make_trend(category=dance, slug="dance-draft", status=TrendStatus.DRAFT)
    make_trend(category=dance, slug="dance-retired", status=TrendStatus.RETIRED)


def slugs(result: dict) -> list[str]:
    return [edge["node"]["slug"] for edge in result["data"]["trends"]["edges"]]


def test_trends_pages_through_live_trends_newest_first(gql, catalogue):
    first = gql(TRENDS, {"first": 4})
    assert slugs(first) == ["dance-0", "film-0", "dance-1", "dance-2"]
    page = first["data"]["trends"]["pageInfo"]
    assert page["hasNextPage"] is True and page["hasPreviousPage"] is False
    second = gql(TRENDS, {"first": 4, "after": page["endCursor"]})
    assert slugs(second) == ["dance-3", "dance-4"]
    assert second["data"]["trends"]["pageInfo"]["hasNextPage"] is False


def test_trends_filter_by_category_and_tag(gql, catalogue):
    assert slugs(gql(TRENDS, {"category": "film"})) == ["film-0"]
    assert slugs(gql(TRENDS, {"category": "dance", "tag": "night"})) == ["dance-1", "dance-3"]
    assert slugs(gql(TRENDS, {"tag": "NOIR"})) == ["film-0"]
    assert slugs(gql(TRENDS, {"category": "no-such-category"})) == []


def test_trend_by_slug_is_null_unless_live_and_node_finds_it(gql, catalogue):
    live = gql('{ trend(slug: "dance-1") { id slug } }')["data"]["trend"]
    assert live["slug"] == "dance-1"
    for slug in ("dance-draft", "dance-retired", "nope"):
        assert gql("query ($s: String!) { trend(slug: $s) { id } }", {"s": slug}) == {"data": {"trend": None}}
    node = gql("query ($id: ID!) { node(id: $id) { __typename ... on Trend { slug } } }", {"id": live["id"]})
    assert node == {"data": {"node": {"__typename": "Trend", "slug": "dance-1"}}}


def test_the_demo_catalogue_loads_once_and_fills_the_home_screen(gql, settings):
    call_command("load_trends", "--no-previews")
    live = Trend.objects.filter(status=TrendStatus.LIVE)
    assert live.count() >= 30
    assert Category.objects.filter(trends__status=TrendStatus.LIVE).distinct().count() >= 6
    assert all(t.cover_image_key and t.cover_width for t in live)
    counts = (live.count(), Category.objects.count(), FeedSection.objects.count())
    call_command("load_trends", "--no-previews")  # idempotent
    assert (live.count(), Category.objects.count(), FeedSection.objects.count()) == counts

    screen = gql(
        '{ homeScreen(platform: ANDROID, appVersion: "9.0", locale: "pt-BR") { sections { __typename '
        "... on HomeSection { title } "
        "... on TrendCarouselSection { trends { slug coverImage { url } } } } } }"
    )
    sections = screen["data"]["homeScreen"]["sections"]
    types = [s["__typename"] for s in sections]
    assert types[:4] == [
        "HeroSection",
        "CategoryChipsSection",
        "TrendCarouselSection",
        "TrendCarouselSection",
    ]
    assert {"SoulIdPromptSection", "PromoSection", "TrendGridSection"} <= set(types)
    assert sections[2]["title"] == "Em alta"  # Portuguese, from the catalogue's translations
    cover = sections[2]["trends"][0]["coverImage"]["url"]
    from django.test import Client

    assert Client().get(cover).status_code == 200
