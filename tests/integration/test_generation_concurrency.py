"""Parallel createGeneration calls on PostgreSQL (select_for_update is a no-op on SQLite), through the live
server: credits for k of N means exactly k generations, and the balance never goes below zero."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from apps.credits.models import CreditHold
from apps.generations.models import Generation
from tests.graphql.generations.helpers import CREATE, a_trend, key, ledger, wallet
from tests.graphql.generations.stack import LiveUser

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

N = 8


def _burst(user: LiveUser, requests: list[dict]) -> list[dict]:
    start = threading.Barrier(len(requests))

    def call(variables: dict) -> dict:
        start.wait()
        return user.gql(CREATE, {"input": variables})["data"]["createGeneration"]

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(call, requests))


@pytest.fixture
def user(asgi_server, shipped_routes, settings):
    settings.WELCOME_CREDITS = 20
    settings.GENERATIONS_MAX_ACTIVE_PER_USER = N + 1
    return LiveUser(asgi_server)


def test_parallel_creates_with_credits_for_k_of_n_make_exactly_k(user):
    trend = a_trend(requires="NONE", price_standard=6, price_cinema=10)  # 20 credits: 3 of 8
    results = _burst(user, [{"trendSlug": trend.slug, "idempotencyKey": key()} for _ in range(N)])
    kinds = sorted(result["__typename"] for result in results)
    assert kinds == ["GenerationPayload"] * 3 + ["InsufficientCredits"] * 5
    refused = [r for r in results if r["__typename"] == "InsufficientCredits"]
    assert all(r["required"] == 6 and r["balance"] == 2 for r in refused)
    assert Generation.objects.filter(owner=user.user).count() == 3
    assert CreditHold.objects.filter(wallet__user=user.user).count() == 3
    assert wallet(user.user) == (2, 18)
    assert ledger(user.user) == [("grant", 20)] + [("hold", 6)] * 3


def test_parallel_retries_of_one_request_make_one_generation_charged_once(user):
    trend = a_trend(requires="NONE", price_standard=4)
    request = {"trendSlug": trend.slug, "idempotencyKey": key()}
    results = _burst(user, [dict(request) for _ in range(N)])
    made = {r["generation"]["id"] for r in results if r["__typename"] == "GenerationPayload"}
    assert len(made) == 1
    # A retry that overlaps the first request is told to wait; none is refused for another reason.
    assert {r["__typename"] for r in results} <= {"GenerationPayload", "IdempotencyInProgress"}
    assert Generation.objects.filter(owner=user.user).count() == 1
    assert wallet(user.user) == (16, 4)
    # Once the first has finished, the same request gets the same generation.
    again = user.gql(CREATE, {"input": request})["data"]["createGeneration"]
    assert again["generation"]["id"] in made
