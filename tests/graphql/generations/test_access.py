"""Another user's generation is NOT_FOUND on every entry point over HTTP (the websocket one is in
test_subscription.py), and the list shows only the caller's own, newest first, in constant queries."""

from __future__ import annotations

import pytest
from strawberry.relay import to_base64

from apps.accounts.models import User
from apps.generations.models import Generation, GenerationStatus
from tests.graphql.generations.helpers import (
    CANCEL,
    CREATE,
    DELETE,
    GENERATION,
    GENERATIONS,
    NODE,
    SHARE,
    a_trend,
    generation_from,
    key,
    ledger,
    wallet,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_users(sign_up, settings):
    settings.WELCOME_CREDITS = 50
    alice, bob = sign_up(), sign_up()
    return alice["accessToken"], bob["accessToken"]


def _create(gql, token, trend, **fields) -> str:
    variables = {"input": {"trendSlug": trend.slug, "idempotencyKey": key(), **fields}}
    result = gql(CREATE, variables, token=token)["data"]["createGeneration"]
    assert result["__typename"] == "GenerationPayload", result
    return result["generation"]["id"]


def test_another_users_generation_is_not_found_everywhere(gql, two_users, shipped_routes):
    alice, bob = two_users
    trend = a_trend(requires="NONE", price_standard=4)
    theirs = _create(gql, alice, trend)
    generation = generation_from(theirs)
    generation.status = GenerationStatus.SUCCEEDED  # so that a share would otherwise be allowed
    generation.save(update_fields=["status"])

    response = gql(GENERATION, {"id": theirs}, token=bob)
    assert response["data"] == {"generation": None}
    assert [e["extensions"]["code"] for e in response["errors"]] == ["NOT_FOUND"]
    assert gql(NODE, {"id": theirs}, token=bob)["data"]["node"] is None
    for mutation, variables in ((CANCEL, {"id": theirs}), (DELETE, {"id": theirs}), (SHARE, {"id": theirs})):
        result = next(iter(gql(mutation, variables, token=bob)["data"].values()))
        assert (result["__typename"], result["code"]) == ("NotFound", "NOT_FOUND")
    # Nothing happened to it.
    after = generation_from(theirs)
    assert (after.status, after.deleted_at, after.shares) == (GenerationStatus.SUCCEEDED, None, 0)
    # The owner sees it, by global id and by node.
    assert gql(GENERATION, {"id": theirs}, token=alice)["data"]["generation"]["id"] == theirs
    assert gql(NODE, {"id": theirs}, token=alice)["data"]["node"] == {
        "__typename": "Generation",
        "id": theirs,
        "status": "SUCCEEDED",
    }


@pytest.mark.parametrize(
    "bad_id", ["nonsense", to_base64("Generation", "not-a-uuid"), to_base64("Upload", "x")]
)
def test_malformed_ids_are_not_found(gql, two_users, shipped_routes, bad_id):
    alice, _ = two_users
    response = gql(GENERATION, {"id": bad_id}, token=alice)
    assert response["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_the_list_is_own_only_newest_first_and_pages(gql, two_users, shipped_routes):
    alice, bob = two_users
    trend = a_trend(requires="NONE", price_standard=1)
    mine = [_create(gql, alice, trend) for _ in range(3)]
    _create(gql, bob, trend)
    page = gql(GENERATIONS, {"first": 2}, token=alice)["data"]["generations"]
    assert [edge["node"]["id"] for edge in page["edges"]] == [mine[2], mine[1]]
    assert page["pageInfo"]["hasNextPage"] is True
    rest = gql(GENERATIONS, {"first": 2, "after": page["pageInfo"]["endCursor"]}, token=alice)["data"]
    assert [edge["node"]["id"] for edge in rest["generations"]["edges"]] == [mine[0]]


def test_cancel_then_delete_hides_it_and_releases_the_hold(gql, two_users, shipped_routes):
    alice, _ = two_users
    trend = a_trend(requires="NONE", price_standard=4)
    generation_id = _create(gql, alice, trend)
    user = User.objects.get(pk=generation_from(generation_id).owner_id)
    assert wallet(user) == (46, 4)
    deleted = gql(DELETE, {"id": generation_id}, token=alice)["data"]["deleteGeneration"]
    assert deleted == {"__typename": "DeletePayload", "id": generation_id}
    assert wallet(user) == (50, 0)
    assert ledger(user) == [("grant", 50), ("hold", 4), ("release", 4)]
    assert (
        gql(GENERATION, {"id": generation_id}, token=alice)["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    )
    assert gql(GENERATIONS, {"first": 10}, token=alice)["data"]["generations"]["edges"] == []
    stored = Generation.objects.get()
    assert stored.status == GenerationStatus.CANCELED and stored.deleted_at is not None


def test_only_a_finished_video_can_be_shared(gql, two_users, shipped_routes):
    alice, _ = two_users
    trend = a_trend(requires="NONE", price_standard=4)
    generation_id = _create(gql, alice, trend)
    queued = gql(SHARE, {"id": generation_id}, token=alice)["data"]["recordShare"]
    assert (queued["__typename"], queued["field"]) == ("ValidationError", "generationId")
    Generation.objects.update(status=GenerationStatus.SUCCEEDED)
    shared = gql(SHARE, {"id": generation_id, "channel": "instagram"}, token=alice)["data"]["recordShare"]
    assert shared == {"__typename": "SharePayload", "generation": {"id": generation_id}}
    assert Generation.objects.get().shares == 1


@pytest.mark.parametrize("count", [3, 30])
def test_listing_costs_the_same_queries_however_long_the_list(
    gql, two_users, shipped_routes, django_assert_num_queries, count
):
    alice, _ = two_users
    trend = a_trend(requires="NONE", price_standard=1)
    template = generation_from(_create(gql, alice, trend))
    statuses = [GenerationStatus.SUCCEEDED, GenerationStatus.FAILED, GenerationStatus.RUNNING]
    for i in range(count - 1):
        template.pk = None
        template._state.adding = True
        template.idempotency_key = key()
        template.status = statuses[i % 3]
        template.video_key = f"generations/{template.owner_id}/x{i}/a1/video.mp4"
        template.save()
    # One page of generations with their trends, categories and routes, then the queue estimate of the one
    # queued generation (its work ahead, running work); the bearer token's user comes from the auth cache
    # (apps/accounts/auth_cache.py) and the routes from the process's copy (apps/core/table_cache.py),
    # both warm since alice's create.
    with django_assert_num_queries(3):
        page = gql(GENERATIONS, {"first": 50}, token=alice)["data"]["generations"]
    assert len(page["edges"]) == count
    assert all(edge["node"]["trend"]["slug"] == trend.slug for edge in page["edges"])
