"""A Soul ID's LoRA is used only on a route it was made for (gpu_worker.contract.lora_fits_route): the
first route of the trend's chain that the LoRA fits, else UNSUPPORTED_OPTION naming the Soul ID."""

from __future__ import annotations

import pytest
from strawberry.relay import to_base64

from apps.characters.models import Character
from apps.generations.models import Generation
from tests.fixtures.factories import make_ready_soul_id
from tests.graphql.generations.helpers import CREATE, QUOTE, a_trend, generation_from, key, wallet

pytestmark = pytest.mark.django_db

WAN = {"family": "wan22", "base_checkpoint": "Wan2.2-TI2V-5B-Diffusers"}
LTX = {"family": "ltx", "base_checkpoint": "LTX-Video-0.9.7-distilled"}
TINY = {"family": "tiny-wan", "base_checkpoint": ""}


@pytest.fixture
def alice(sign_up, settings):
    settings.WELCOME_CREDITS = 20
    settings.GENERATIONS_ROUTE_OVERRIDE = ""  # route by the trend's chain
    auth = sign_up()
    from apps.accounts.models import User

    return auth["accessToken"], User.objects.get(email=auth["user"]["email"])


def _soul_id(user, metadata: dict) -> str:
    character = make_ready_soul_id(user, lora_metadata=dict(metadata, trigger="sks person"))
    return to_base64("Character", character.pk)


def _wan_trend():
    # wan2.2-ti2v-5b (STANDARD, CINEMA) falls back to ltx-video (DRAFT, STANDARD)
    return a_trend(
        requires="SOUL_ID",
        preferred_model_route="wan2.2-ti2v-5b",
        price_draft=3,
        price_standard=4,
        price_cinema=6,
        default_quality="STANDARD",
    )


def _create(gql, token, **fields):
    fields.setdefault("idempotencyKey", key())
    return gql(CREATE, {"input": fields}, token=token)["data"]["createGeneration"]


def _assert_refused(result, *, field: str = "characterId"):
    assert (result["__typename"], result["code"], result["field"]) == (
        "UnsupportedOption",
        "UNSUPPORTED_OPTION",
        field,
    ), result


@pytest.mark.parametrize(("metadata", "route"), [(WAN, "wan2.2-ti2v-5b"), (LTX, "ltx-video")])
def test_the_first_route_of_the_chain_the_lora_fits_is_chosen(gql, alice, shipped_routes, metadata, route):
    token, user = alice
    trend = _wan_trend()
    made = _create(gql, token, trendSlug=trend.slug, characterId=_soul_id(user, metadata))
    assert made["__typename"] == "GenerationPayload", made
    generation = generation_from(made["generation"]["id"])
    assert generation.route_name == route
    assert generation.route.family == metadata["family"]
    assert generation.lora_key and wallet(user) == (16, 4)


def test_a_soul_id_made_for_another_model_is_refused_and_nothing_is_charged(gql, alice, shipped_routes):
    token, user = alice
    trend = _wan_trend()
    character_id = _soul_id(user, TINY)
    refused = _create(gql, token, trendSlug=trend.slug, characterId=character_id)
    _assert_refused(refused)
    assert "Soul ID cannot be used with this preset" in refused["message"]
    quote = gql(QUOTE, {"input": {"trendSlug": trend.slug, "characterId": character_id}}, token=token)
    _assert_refused(quote["data"]["generationQuote"])
    assert Generation.objects.count() == 0 and wallet(user) == (20, 0)


def test_a_soul_id_without_recorded_base_model_fits_no_route(gql, alice, shipped_routes):
    token, user = alice
    trend = a_trend(requires="SOUL_ID", price_standard=4)  # tiny-wan
    _assert_refused(_create(gql, token, trendSlug=trend.slug, characterId=_soul_id(user, {})))
    assert Generation.objects.count() == 0 and wallet(user) == (20, 0)


def test_a_tier_only_other_routes_offer_names_the_quality(gql, alice, shipped_routes):
    """An LTX Soul ID on the wan trend: ltx-video does not offer CINEMA, so the answer names the quality
    (not the Soul ID), even though wan2.2 offers CINEMA (the LoRA does not fit it)."""
    token, user = alice
    trend = _wan_trend()
    refused = _create(gql, token, trendSlug=trend.slug, quality="CINEMA", characterId=_soul_id(user, LTX))
    _assert_refused(refused, field="quality")
    assert Generation.objects.count() == 0 and wallet(user) == (20, 0)


def test_the_route_override_is_used_only_for_a_soul_id_made_for_it(gql, alice, shipped_routes, settings):
    token, user = alice
    settings.GENERATIONS_ROUTE_OVERRIDE = "tiny-wan"
    trend = a_trend(requires="SOUL_ID", price_standard=4)
    _assert_refused(_create(gql, token, trendSlug=trend.slug, characterId=_soul_id(user, WAN)))
    assert Generation.objects.count() == 0 and wallet(user) == (20, 0)
    made = _create(gql, token, trendSlug=trend.slug, characterId=_soul_id(user, TINY))
    assert made["__typename"] == "GenerationPayload", made
    assert generation_from(made["generation"]["id"]).route_name == "tiny-wan"


def test_a_fallback_route_is_taken_only_when_the_lora_fits_it(gql, alice, shipped_routes):
    """A failed job moves to the route's fallback only if the Soul ID's LoRA fits it (wan2.2 -> ltx-video:
    a wan22 LoRA has nowhere to go; a job without a LoRA does)."""
    from apps.generations import routing

    wan = shipped_routes["wan2.2-ti2v-5b"]
    assert routing.route_fallback(wan, needs_image=False, needs_lora=True, lora=tuple(WAN.values())) is None
    ltx = routing.route_fallback(wan, needs_image=False, needs_lora=True, lora=tuple(LTX.values()))
    assert ltx == shipped_routes["ltx-video"]
    assert routing.route_fallback(wan, needs_image=False, needs_lora=False) == shipped_routes["ltx-video"]


def test_a_soul_id_without_a_selfie_gives_its_sharpest_photo_as_the_first_frame(gql, alice, shipped_routes):
    from apps.characters.models import CharacterPhoto
    from apps.generations.models import ModelRoute

    token, user = alice
    soul_id = _soul_id(user, WAN)
    character = Character.objects.get(owner=user)
    for sharpness, status in ((0.3, "ACCEPTED"), (0.9, "ACCEPTED"), (2.0, "REJECTED")):
        CharacterPhoto.objects.create(
            character=character,
            upload_key=f"uploads/{user.pk}/{key()}",
            status=status,
            clean_key=f"characters/{user.pk}/{character.pk}/photos/{sharpness}/clean.jpg",
            crop_key=f"characters/{user.pk}/{character.pk}/photos/{sharpness}/crop.jpg",
            measurements={"sharpness": sharpness},
        )
    made = _create(gql, token, trendSlug=_wan_trend().slug, characterId=soul_id)
    assert made["__typename"] == "GenerationPayload", made
    generation = generation_from(made["generation"]["id"])
    assert ModelRoute.objects.get(name=generation.route_name).image_conditioning
    assert generation.image_key == f"characters/{user.pk}/{character.pk}/photos/0.9/clean.jpg"
    assert generation.lora_key


def test_a_soul_id_is_refused_on_a_route_that_does_not_stack_loras(gql, alice, shipped_routes, settings):
    """A distilled route (lora_stacking off) takes no LoRA: the Soul ID made for its checkpoint is refused
    as made for another model, through the preferred chain and through the route override alike."""
    from apps.generations.models import ModelRoute

    token, user = alice
    ModelRoute.objects.filter(name__in=["wan2.2-ti2v-5b", "tiny-wan"]).update(lora_stacking=False)
    refused = _create(gql, token, trendSlug=_wan_trend().slug, characterId=_soul_id(user, WAN))
    _assert_refused(refused)
    assert "Soul ID cannot be used with this preset" in refused["message"]

    settings.GENERATIONS_ROUTE_OVERRIDE = "tiny-wan"
    trend = a_trend(requires="SOUL_ID", price_standard=4)
    _assert_refused(_create(gql, token, trendSlug=trend.slug, characterId=_soul_id(user, TINY)))
    assert Generation.objects.count() == 0 and wallet(user) == (20, 0)
