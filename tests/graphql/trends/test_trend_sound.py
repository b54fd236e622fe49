"""What the app sees of sound: a trend's `sound { title artist licence }` and `hasSound` (the home
screen's cards), and a generation's `hasSound` following `withSound` and the trend."""

from __future__ import annotations

import pytest

from apps.generations.models import Generation
from tests.apps.trends.helpers import make_category, make_section, make_trend
from tests.fixtures.uploads import UploadFlow
from tests.graphql.generations.helpers import key
from tests.graphql.generations.test_create import _selfie

pytestmark = pytest.mark.django_db

HOME = """
{ homeScreen(platform: IOS, appVersion: "2.0.0") { sections { __typename
  ... on TrendCarouselSection { trends { slug hasSound sound { title artist licence } } } } } }
"""

CREATE = """
mutation ($input: GenerationInput!) { createGeneration(input: $input) { __typename
  ... on GenerationPayload { generation { id hasSound trend { slug hasSound } } }
  ... on Error { code message } } }
"""


@pytest.fixture
def alice(sign_up, settings):
    settings.WELCOME_CREDITS = 20
    settings.GENERATIONS_ROUTE_OVERRIDE = ""
    auth = sign_up()
    return auth["accessToken"], None, None


@pytest.fixture
def flow(gql, client, alice):
    return UploadFlow(gql, client, alice[0])


SOUND = {"sound_key": "trends/sounds/s.m4a", "sound_title": "Night Drive", "sound_artist": "Demo Band"}


def test_the_home_screens_trend_cards_say_whether_a_trend_has_sound(gql):
    dance = make_category("dance")
    loud = make_trend(category=dance, slug="loud", sound_licence="CC0, free for any use", **SOUND)
    quiet = make_trend(category=dance, slug="quiet")
    make_section("carousel", title="Hot", source="manual", items=[loud, quiet])

    result = gql(HOME)

    assert "errors" not in result, result
    (section,) = result["data"]["homeScreen"]["sections"]
    assert section["trends"] == [
        {
            "slug": "loud",
            "hasSound": True,
            "sound": {"title": "Night Drive", "artist": "Demo Band", "licence": "CC0, free for any use"},
        },
        {"slug": "quiet", "hasSound": False, "sound": None},
    ]


@pytest.mark.parametrize(
    ("with_sound", "trend_sound", "expected"),
    [
        ({}, SOUND, True),  # withSound defaults to true
        ({"withSound": True}, SOUND, True),
        ({"withSound": None}, SOUND, True),
        ({"withSound": False}, SOUND, False),
        ({}, {}, False),  # a trend without a sound: a silent video
    ],
)
def test_has_sound_follows_with_sound_and_the_trend(
    gql, alice, flow, shipped_routes, with_sound, trend_sound, expected
):
    token = alice[0]
    trend = make_trend(category=make_category("cat"), requires="SELFIE", **trend_sound)
    fields = {"trendSlug": trend.slug, "photoUploadId": _selfie(flow), "idempotencyKey": key(), **with_sound}

    result = gql(CREATE, {"input": fields}, token=token)["data"]["createGeneration"]

    assert result["__typename"] == "GenerationPayload", result
    assert result["generation"]["hasSound"] is expected
    assert result["generation"]["trend"]["hasSound"] is bool(trend_sound)
    stored = Generation.objects.get()
    assert stored.sound_key == (SOUND["sound_key"] if expected else "")


def test_the_same_key_with_and_without_sound_is_another_request(gql, alice, flow, shipped_routes):
    token = alice[0]
    trend = make_trend(category=make_category("cat"), requires="SELFIE", **SOUND)
    fields = {"trendSlug": trend.slug, "photoUploadId": _selfie(flow), "idempotencyKey": key()}
    first = gql(CREATE, {"input": fields}, token=token)["data"]["createGeneration"]
    again = gql(CREATE, {"input": {**fields, "withSound": True}}, token=token)["data"]["createGeneration"]
    other = gql(CREATE, {"input": {**fields, "withSound": False}}, token=token)["data"]["createGeneration"]
    assert again["generation"]["id"] == first["generation"]["id"]
    assert other["__typename"] == "IdempotencyKeyReused"


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("first: -1", "Argument 'first' must be a non-negative integer."),
        ("last: 101", "Argument 'last' cannot be higher than 100."),
        ('after: "x"', "A cursor is not valid: send `after`/`before` cursors from an earlier page."),
    ],
)
def test_bad_paging_arguments_are_a_validation_error_not_a_bug(gql, argument, message):
    result = gql(f"{{ trends({argument}) {{ edges {{ node {{ slug }} }} }} }}")
    (error,) = result["errors"]
    assert (error["extensions"]["code"], error["message"]) == ("VALIDATION", message), error
