"""finalizeGeneration through GraphQL: a succeeded DRAFT rendered again at a higher tier, and what it
refuses (typed errors, nothing held). Quotes per tier. No GPU here: the draft's success is written as the
job lifecycle would (tests/integration/test_tiers_flow.py runs both on the tiny route end to end)."""

from __future__ import annotations

import pytest

from apps.credits.services import credits_capture
from apps.generations.models import Generation, GenerationStatus, ModelRoute
from tests.graphql.generations.helpers import (
    CREATE,
    ERRORS,
    QUOTE,
    a_trend,
    generation_from,
    hold_of,
    key,
    ledger,
    wallet,
)

pytestmark = pytest.mark.django_db

TIER_FIELDS = "id status quality tier seed width height fps frameCount price draft { id } finals { id tier }"

FINALIZE = f"""
mutation ($id: ID!, $quality: QualityTier!, $key: String) {{
  finalizeGeneration(id: $id, quality: $quality, idempotencyKey: $key) {{
    __typename
    ... on GenerationPayload {{ generation {{ {TIER_FIELDS} plan {{ prompt }} }} }}
    {ERRORS}
  }}
}}
"""

READ = f"query ($id: ID!) {{ generation(id: $id) {{ {TIER_FIELDS} }} }}"


@pytest.fixture
def alice(sign_up, settings):
    settings.WELCOME_CREDITS = 40
    settings.GENERATIONS_ROUTE_OVERRIDE = "tiny-wan"
    settings.GENERATIONS_MAX_ACTIVE_PER_USER = 10
    auth = sign_up()
    from apps.accounts.models import User

    return auth["accessToken"], User.objects.get(email=auth["user"]["email"])


@pytest.fixture
def trend():
    return a_trend(requires="NONE", price_draft=2, price_standard=5, price_cinema=9)


def _draft(gql, token, trend, *, succeed: bool = True, quality: str = "DRAFT", seed_used: int = 4242) -> str:
    created = gql(
        CREATE,
        {
            "input": {
                "trendSlug": trend.slug,
                "quality": quality,
                "aspectRatio": "SQUARE_1_1",
                "idempotencyKey": key(),
            }
        },
        token=token,
    )["data"]["createGeneration"]
    assert created["__typename"] == "GenerationPayload", created
    generation_id = created["generation"]["id"]
    if succeed:  # what the lifecycle writes on the worker's completed event (charged the quote)
        generation = generation_from(generation_id)
        credits_capture(owner=generation)
        Generation.objects.filter(pk=generation.pk).update(
            status=GenerationStatus.SUCCEEDED,
            seed_used=seed_used,
            credits_charged=generation.quoted_credits,
            video_width=generation.width,
            video_height=generation.height,
            video_fps=8,
            video_frames=generation.num_frames,
        )
    return generation_id


def _finalize(gql, token, generation_id, quality="CINEMA", idempotency_key=None):
    variables = {"id": generation_id, "quality": quality, "key": idempotency_key or key()}
    return gql(FINALIZE, variables, token=token)["data"]["finalizeGeneration"]


def test_quotes_and_prices_follow_the_tier(gql, alice, trend, shipped_routes):
    token, _ = alice
    quotes = {
        tier: gql(QUOTE, {"input": {"trendSlug": trend.slug, "quality": tier}}, token=token)["data"][
            "generationQuote"
        ]
        for tier in ("DRAFT", "STANDARD", "CINEMA")
    }
    # The trend's 2, 5 and 9 are minimums; tiny-wan's CINEMA render (8 + 4 refine steps x 176 tokens x
    # 5700 credits per million = 12.04) costs more than 9.
    assert [quotes[tier]["credits"] for tier in ("DRAFT", "STANDARD", "CINEMA")] == [2, 5, 12]
    etas = [quotes[tier]["etaSeconds"] for tier in ("DRAFT", "STANDARD", "CINEMA")]
    tiny = shipped_routes["tiny-wan"]
    # 9:16 at 5 s: DRAFT 32x32 -> 32x48 at 2 steps, STANDARD and CINEMA 48x80 at 4 and 8 + 4 steps, 41
    # frames
    native = 64 * 64 * 41
    expected = [
        round(steps * tiny.seconds_per_step * (w * h * 41) / native + tiny.overhead_seconds)
        for steps, (w, h) in ((2, (32, 48)), (4, (48, 80)), (8 + 4, (48, 80)))
    ]
    assert etas == expected


def test_a_draft_finalized_at_cinema_keeps_inputs_seed_and_plan_and_is_priced_as_cinema(gql, alice, trend):
    token, user = alice
    draft_id = _draft(gql, token, trend)
    assert wallet(user) == (38, 0)  # the draft's 2 credits charged (written above), nothing held
    read = gql(READ, {"id": draft_id}, token=token)["data"]["generation"]
    assert (read["tier"], read["seed"], read["width"], read["height"], read["fps"], read["frameCount"]) == (
        "DRAFT",
        4242,  # the seed the worker used
        32,
        32,
        8,
        41,
    )
    idempotency_key = key()

    final = _finalize(gql, token, draft_id, "CINEMA", idempotency_key)

    assert final["__typename"] == "GenerationPayload", final
    made = final["generation"]
    assert (made["status"], made["quality"], made["tier"], made["price"]) == (
        "QUEUED",
        "CINEMA",
        "CINEMA",
        12,
    )
    assert (made["seed"], made["width"], made["height"], made["frameCount"], made["fps"]) == (
        4242,
        64,
        64,
        41,
        8,
    )
    assert made["draft"] == {"id": draft_id}
    draft, row = generation_from(draft_id), generation_from(made["id"])
    assert row.plan == draft.plan and row.route_id == draft.route_id and row.draft_id == draft.pk
    assert (row.trend_id, row.aspect_ratio, row.duration_seconds, row.lane) == (
        draft.trend_id,
        draft.aspect_ratio,
        draft.duration_seconds,
        draft.lane,
    )
    assert wallet(user) == (26, 12) and hold_of(row).amount == 12  # (spendable, held)
    # The draft lists its finals; the same key gives the same final, held once.
    again = _finalize(gql, token, draft_id, "CINEMA", idempotency_key)
    assert again["generation"]["id"] == made["id"] and wallet(user) == (26, 12)
    finals = gql(READ, {"id": draft_id}, token=token)["data"]["generation"]["finals"]
    assert finals == [{"id": made["id"], "tier": "CINEMA"}]
    reused = _finalize(gql, token, draft_id, "STANDARD", idempotency_key)
    assert reused["__typename"] == "IdempotencyKeyReused"


def test_a_setting_may_credit_the_drafts_price(gql, alice, trend, settings):
    settings.GENERATIONS_FINAL_CREDITS_DRAFT = True
    token, user = alice
    draft_id = _draft(gql, token, trend)
    final = _finalize(gql, token, draft_id, "STANDARD")
    assert final["generation"]["price"] == 5 - 2 and wallet(user) == (35, 3)


def test_refusals_are_typed_and_hold_nothing(gql, alice, sign_up, trend):
    token, user = alice
    draft_id = _draft(gql, token, trend)
    failed_id = _draft(gql, token, trend, succeed=False)
    Generation.objects.filter(pk=generation_from(failed_id).pk).update(status=GenerationStatus.FAILED)
    queued_id = _draft(gql, token, trend, succeed=False)
    standard_id = _draft(gql, token, trend, quality="STANDARD")
    entries = ledger(user)
    balance = wallet(user)
    count = Generation.objects.count()

    bob = sign_up()["accessToken"]
    someone_elses = _finalize(gql, bob, draft_id)
    assert (someone_elses["__typename"], someone_elses["code"], someone_elses["field"]) == (
        "NotFound",
        "NOT_FOUND",
        "id",
    )
    for generation_id in (failed_id, queued_id, standard_id):
        refused = _finalize(gql, token, generation_id)
        assert (refused["__typename"], refused["field"]) == ("ValidationError", "id"), refused
    not_above = _finalize(gql, token, draft_id, "DRAFT")
    assert (not_above["__typename"], not_above["field"]) == ("ValidationError", "quality")
    ModelRoute.objects.filter(name="tiny-wan").update(enabled=False)
    gone = _finalize(gql, token, draft_id)
    assert (gone["__typename"], gone["code"], gone["field"]) == (
        "UnsupportedOption",
        "UNSUPPORTED_OPTION",
        "id",
    )
    ModelRoute.objects.filter(name="tiny-wan").update(enabled=True)
    generation_from(draft_id).route.__class__.objects.filter(name="tiny-wan").update(quality_tiers=["DRAFT"])
    not_offered = _finalize(gql, token, draft_id)
    assert (not_offered["__typename"], not_offered["field"]) == ("UnsupportedOption", "quality")

    assert Generation.objects.count() == count
    assert ledger(user) == entries and wallet(user) == balance
