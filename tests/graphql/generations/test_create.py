"""generationQuote and createGeneration through GraphQL: price, hold, idempotency, limits, bad input.

No GPU here: the test database transaction never commits, so no job is sent; what these tests check is
what the API answers, what is stored and what is charged.
"""

from __future__ import annotations

import io

import pytest
from django.core.cache import cache
from PIL import ExifTags, Image

from apps.accounts.models import User
from apps.characters.photo_checks import reason_message
from apps.credits.services import credits_grant
from apps.generations.models import Generation, GenerationStatus, ModelRoute, PriceRule
from apps.storage.backends import get_storage
from apps.storage.models import Upload
from apps.trends.models import TrendStatus
from tests.fixtures.characters import make_photos
from tests.fixtures.uploads import UploadFlow
from tests.graphql.generations.helpers import (
    CREATE,
    QUOTE,
    a_trend,
    generation_from,
    hold_of,
    key,
    ledger,
    selfie_bytes,
    wallet,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(sign_up, gql, client, settings):
    settings.WELCOME_CREDITS = 20
    settings.GENERATIONS_ROUTE_OVERRIDE = ""  # route by the trend (embedded default: all to tiny-wan)
    auth = sign_up()
    from apps.accounts.models import User

    user = User.objects.get(email=auth["user"]["email"])
    flow = UploadFlow(gql, client, auth["accessToken"])
    return auth["accessToken"], user, flow


def _selfie(flow: UploadFlow, *, complete: bool = False) -> str:
    target = flow.target("image/jpeg")
    flow.send(target, selfie_bytes())
    if complete:
        assert flow.complete(target["uploadId"])["__typename"] == "UploadPayload"
    return target["uploadId"]


def _create(gql, token, **fields):
    fields.setdefault("idempotencyKey", key())
    return gql(CREATE, {"input": fields}, token=token)["data"]["createGeneration"]


def test_quote_gives_the_price_and_an_eta_and_changes_nothing(gql, alice, shipped_routes):
    token, user, flow = alice
    trend = a_trend(price_draft=2, price_standard=5, price_cinema=9, default_quality="STANDARD")
    quote = gql(QUOTE, {"input": {"trendSlug": trend.slug}}, token=token)["data"]["generationQuote"]
    assert quote["__typename"] == "QuotePayload"
    route = shipped_routes["tiny-wan"]
    width, height, frames = 48, 80, 41  # tiny-wan 64x64 at 9:16, 5 s at 8 fps
    expected_eta = round(route.steps * route.seconds_per_step * (width * height * frames) / (64 * 64 * 41)
                         + route.overhead_seconds)  # fmt: skip
    assert quote == {
        "__typename": "QuotePayload",
        "credits": 5,
        "etaSeconds": expected_eta,
        "balance": 20,
        "aspectRatio": "PORTRAIT_9_16",
        "durationSeconds": 5,
        "quality": "STANDARD",
        "speed": "INSTANT",
    }
    cinema = gql(
        QUOTE, {"input": {"trendSlug": trend.slug, "quality": "CINEMA", "speed": "ECONOMY"}}, token=token
    )
    # tiny-wan's CINEMA render (12 steps x 176 tokens x 5700 per million = 12.04) is above the trend's 9;
    # ECONOMY: 25% off, rounded down
    assert cinema["data"]["generationQuote"]["credits"] == 12 - 12 * 25 // 100
    assert Generation.objects.count() == 0
    assert wallet(user) == (20, 0)


def test_a_price_rule_adjusts_the_trend_price(gql, alice, shipped_routes):
    token, _, _ = alice
    trend = a_trend(price_standard=4)
    route = shipped_routes["tiny-wan"]
    PriceRule.objects.create(route=route, quality="STANDARD", duration_seconds=8, multiplier="1.5")
    PriceRule.objects.create(quality="STANDARD", add_credits=3)  # less specific: loses to the rule above

    def price(duration: int) -> int:
        variables = {"input": {"trendSlug": trend.slug, "durationSeconds": duration}}
        return gql(QUOTE, variables, token=token)["data"]["generationQuote"]["credits"]

    assert price(8) == 9  # the render of 8 s costs 6 (1088 step-tokens x 5700 / 1e6), x 1.5
    assert price(5) == 7  # 4 + 3


@pytest.mark.parametrize(
    ("quality", "duration", "credits"),
    [
        ("DRAFT", 5, 1),  # 88 step-tokens x 5700 / 1e6 = 0.50, half up
        ("STANDARD", 5, 4),  # 704 -> 4.01
        ("STANDARD", 8, 6),  # 1088 -> 6.20: a longer clip costs more
        ("CINEMA", 8, 19),  # 3264 (twice the steps and a refine pass of 4) -> 18.60
    ],
)
def test_the_quote_follows_the_render_cost_and_is_what_create_holds(
    gql, alice, shipped_routes, quality, duration, credits
):
    token, user, _ = alice
    trend = a_trend(requires="NONE", price_draft=1, price_standard=1, price_cinema=1)  # minimums below
    fields = {"trendSlug": trend.slug, "quality": quality, "durationSeconds": duration}
    quote = gql(QUOTE, {"input": fields}, token=token)["data"]["generationQuote"]
    assert quote["credits"] == credits
    created = _create(gql, token, **fields)
    assert created["__typename"] == "GenerationPayload", created
    assert created["generation"]["price"] == credits
    assert wallet(user) == (20 - credits, credits)


def test_create_with_a_selfie_holds_the_price_and_queues(gql, alice, shipped_routes):
    token, user, flow = alice
    trend = a_trend(price_standard=4, requires="SELFIE", camera_movement="orbit", lens="85mm portrait")
    upload_id = _selfie(flow)  # sent, not completed: createGeneration checks it itself
    result = _create(gql, token, trendSlug=trend.slug, photoUploadId=upload_id, prompt="make it feel dreamy")
    assert result["__typename"] == "GenerationPayload", result
    generation = result["generation"]
    assert {
        k: generation[k] for k in ("status", "stage", "progress", "creditsCharged", "price", "queuePosition")
    } == {
        "status": "QUEUED",
        "stage": None,
        "progress": 0.0,
        "creditsCharged": 0,
        "price": 4,
        "queuePosition": 1,
    }
    assert generation["trend"] == {"slug": trend.slug, "title": trend.title}
    assert (generation["video"], generation["poster"], generation["failure"]) == (None, None, None)
    plan = generation["plan"]
    assert plan["movement"] == "ORBIT" and "dreamy" not in plan["negativePrompt"]
    assert "the person in the photo" in plan["prompt"].lower()
    # Held, not charged; the selfie was verified on the way.
    assert wallet(user) == (16, 4)
    assert ledger(user) == [("grant", 20), ("hold", 4)]
    stored = generation_from(generation["id"])
    assert stored.image_key == Upload.objects.get().key and Upload.objects.get().status == "VERIFIED"
    assert (stored.route_name, stored.width, stored.height, stored.num_frames) == ("tiny-wan", 48, 80, 41)
    assert hold_of(stored).amount == 4


def test_the_same_key_and_input_returns_the_same_generation_charged_once(gql, alice, shipped_routes):
    token, user, flow = alice
    trend = a_trend(price_standard=4, requires="NONE")
    request = {"trendSlug": trend.slug, "idempotencyKey": key(), "seed": 7}
    first = _create(gql, token, **request)
    again = _create(gql, token, **request)
    assert first["__typename"] == again["__typename"] == "GenerationPayload"
    assert again["generation"]["id"] == first["generation"]["id"]
    assert Generation.objects.count() == 1
    assert ledger(user) == [("grant", 20), ("hold", 4)]


def test_the_same_key_with_another_input_is_refused(gql, alice, shipped_routes):
    token, user, _ = alice
    trend = a_trend(requires="NONE")
    request_key = key()
    assert (
        _create(gql, token, trendSlug=trend.slug, idempotencyKey=request_key)["__typename"]
        == "GenerationPayload"
    )
    reused = _create(gql, token, trendSlug=trend.slug, idempotencyKey=request_key, quality="CINEMA")
    assert reused == {
        "__typename": "IdempotencyKeyReused",
        "code": "IDEMPOTENCY_KEY_REUSED",
        "message": reused["message"],
        "field": "idempotencyKey",
    }
    assert Generation.objects.count() == 1
    assert len(ledger(user)) == 2


def test_keys_are_per_user(gql, alice, sign_up, shipped_routes):
    token, _, _ = alice
    trend = a_trend(requires="NONE")
    shared_key = key()
    bob = sign_up()["accessToken"]
    mine = _create(gql, token, trendSlug=trend.slug, idempotencyKey=shared_key)
    theirs = _create(gql, bob, trendSlug=trend.slug, idempotencyKey=shared_key, quality="CINEMA")
    assert mine["__typename"] == theirs["__typename"] == "GenerationPayload"
    assert mine["generation"]["id"] != theirs["generation"]["id"]


def test_a_key_still_in_flight_says_so(gql, alice, shipped_routes):
    token, user, _ = alice
    trend = a_trend(requires="NONE")
    request_key = key()
    # What a first request holds while it runs (see generation_create).
    import hashlib

    cache.add(f"generations:idempotency:{user.pk}:{hashlib.sha256(request_key.encode()).hexdigest()}", 1, 60)
    result = _create(gql, token, trendSlug=trend.slug, idempotencyKey=request_key)
    assert (result["__typename"], result["code"], result["field"]) == (
        "IdempotencyInProgress",
        "IDEMPOTENCY_IN_PROGRESS",
        "idempotencyKey",
    )
    assert Generation.objects.count() == 0


def test_insufficient_credits_says_how_many_and_charges_nothing(gql, alice, shipped_routes):
    token, user, _ = alice
    trend = a_trend(requires="NONE", price_draft=5, price_standard=25, price_cinema=50)
    result = _create(gql, token, trendSlug=trend.slug, quality="STANDARD")
    assert result == {
        "__typename": "InsufficientCredits",
        "code": "INSUFFICIENT_CREDITS",
        "message": "This needs 25 credits and you have 20.",
        "required": 25,
        "balance": 20,
    }
    assert Generation.objects.count() == 0
    assert wallet(user) == (20, 0) and ledger(user) == [("grant", 20)]


def test_too_many_active_generations_is_rate_limited(gql, alice, shipped_routes, settings):
    settings.GENERATIONS_MAX_ACTIVE_PER_USER = 2
    token, user, _ = alice
    trend = a_trend(requires="NONE", price_standard=1)
    for _ in range(2):
        assert _create(gql, token, trendSlug=trend.slug)["__typename"] == "GenerationPayload"
    limited = _create(gql, token, trendSlug=trend.slug)
    assert (limited["__typename"], limited["code"], limited["retryAfterSeconds"]) == (
        "RateLimited",
        "RATE_LIMITED",
        30,
    )
    assert Generation.objects.count() == 2 and wallet(user) == (12, 8)  # 4 each: tiny-wan's render
    # A finished one frees a place.
    Generation.objects.filter(pk=Generation.objects.first().pk).update(status=GenerationStatus.FAILED)
    assert _create(gql, token, trendSlug=trend.slug)["__typename"] == "GenerationPayload"


def test_a_free_prompt_needs_no_trend(gql, alice, shipped_routes, settings):
    settings.GENERATIONS_DEFAULT_ROUTE = "tiny-wan"
    token, user, _ = alice
    result = _create(gql, token, prompt="a city street at night, neon", quality="DRAFT")
    assert result["__typename"] == "GenerationPayload", result
    assert result["generation"]["trend"] is None
    assert result["generation"]["price"] == settings.GENERATIONS_PROMPT_PRICES["DRAFT"]
    assert "neon" in result["generation"]["plan"]["prompt"]


def UNSUPPORTED(field):  # noqa: N802
    return ("UnsupportedOption", "UNSUPPORTED_OPTION", field)


def INVALID(field):  # noqa: N802
    return ("ValidationError", "VALIDATION", field)


def MISSING(field):  # noqa: N802
    return ("NotFound", "NOT_FOUND", field)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"trendSlug": "no-such-trend"}, MISSING("trendSlug")),
        ({"trendSlug": "@retired"}, MISSING("trendSlug")),
        ({"trendSlug": "@draft"}, MISSING("trendSlug")),
        ({}, INVALID("trendSlug")),
        ({"trendSlug": "@trend", "aspectRatio": "LANDSCAPE_16_9"}, UNSUPPORTED("aspectRatio")),
        ({"trendSlug": "@trend", "durationSeconds": 7}, UNSUPPORTED("durationSeconds")),
        ({"trendSlug": "@trend", "prompt": "x" * 501}, INVALID("prompt")),
        ({"trendSlug": "@trend", "seed": -1}, INVALID("seed")),
        ({"trendSlug": "@trend", "idempotencyKey": None}, INVALID("idempotencyKey")),
        ({"trendSlug": "@trend", "idempotencyKey": ""}, INVALID("idempotencyKey")),
        ({"trendSlug": "@selfie-trend"}, INVALID("photoUploadId")),
        ({"trendSlug": "@soul-trend"}, INVALID("characterId")),
        ({"trendSlug": "@trend", "characterId": "Q2hhcmFjdGVyOjE="}, MISSING("characterId")),
        ({"trendSlug": "@trend", "photoUploadId": "VXBsb2FkOjE="}, MISSING("photoUploadId")),
    ],
)
def test_bad_input_gets_a_typed_error_and_charges_nothing(gql, alice, shipped_routes, fields, expected):
    token, user, _ = alice
    slugs = {
        "@trend": a_trend(requires="NONE").slug,
        "@retired": a_trend(status=TrendStatus.RETIRED).slug,
        "@draft": a_trend(status=TrendStatus.DRAFT).slug,
        "@selfie-trend": a_trend(requires="SELFIE").slug,
        "@soul-trend": a_trend(requires="SOUL_ID").slug,
    }
    request = {"idempotencyKey": key(), **fields}
    if "trendSlug" in request:
        request["trendSlug"] = slugs.get(request["trendSlug"], request["trendSlug"])
    result = gql(CREATE, {"input": request}, token=token)["data"]["createGeneration"]
    assert (result["__typename"], result["code"], result["field"]) == expected
    assert result["message"]
    assert Generation.objects.count() == 0
    assert wallet(user) == (20, 0)


def test_another_users_upload_is_not_found(gql, alice, sign_up, client, shipped_routes):
    token, user, _ = alice
    bob_flow = UploadFlow(gql, client, sign_up()["accessToken"])
    bobs_upload = _selfie(bob_flow, complete=True)
    trend = a_trend(requires="SELFIE")
    result = _create(gql, token, trendSlug=trend.slug, photoUploadId=bobs_upload)
    assert (result["__typename"], result["code"], result["field"]) == (
        "NotFound",
        "NOT_FOUND",
        "photoUploadId",
    )
    assert Generation.objects.count() == 0 and wallet(user) == (20, 0)


def test_an_upload_that_is_not_an_image_is_refused(gql, alice, shipped_routes):
    token, user, flow = alice
    target = flow.target("image/jpeg")
    flow.send(target, b"<html>not a photo</html>")
    trend = a_trend(requires="SELFIE")
    result = _create(gql, token, trendSlug=trend.slug, photoUploadId=target["uploadId"])
    assert (result["__typename"], result["code"], result["field"]) == (
        "UploadInvalid",
        "UPLOAD_INVALID",
        "photoUploadId",
    )
    assert result["reason"] in {"UNSUPPORTED_TYPE", "TYPE_MISMATCH", "CORRUPT"}
    assert Generation.objects.count() == 0 and wallet(user) == (20, 0)


@pytest.mark.parametrize(
    ("photo", "reason"),
    [
        pytest.param(make_photos.no_face_jpeg, "NO_FACE", id="landscape"),
        pytest.param(make_photos.two_faces_jpeg, "MULTIPLE_FACES", id="two-faces"),
        pytest.param(make_photos.blurry_jpeg, "BLURRY", id="blurry"),
    ],
)
def test_a_selfie_the_photo_checks_refuse_names_the_reason_and_charges_nothing(
    gql, alice, shipped_routes, photo, reason
):
    token, user, flow = alice
    target = flow.target("image/jpeg")
    flow.send(target, photo())
    trend = a_trend(requires="SELFIE")
    result = _create(gql, token, trendSlug=trend.slug, photoUploadId=target["uploadId"])
    assert (result["__typename"], result["code"], result["field"], result["reason"]) == (
        "UploadInvalid",
        "UPLOAD_INVALID",
        "photoUploadId",
        reason,
    )
    assert result["message"] == reason_message(reason)
    assert Generation.objects.count() == 0 and wallet(user) == (20, 0)
    # The refusal is recorded on the upload and its file deleted: asking again gives the same answer.
    upload = Upload.objects.get()
    assert (upload.status, upload.reject_reason) == ("REJECTED", reason)
    assert get_storage().head(upload.key) is None
    again = _create(gql, token, trendSlug=trend.slug, photoUploadId=target["uploadId"])
    assert (again["__typename"], again["reason"]) == ("UploadInvalid", reason)
    assert wallet(user) == (20, 0)


def test_a_selfie_is_kept_re_encoded_without_its_gps_and_metadata(gql, alice, shipped_routes):
    token, user, flow = alice
    original = make_photos.gps_jpeg()
    with Image.open(io.BytesIO(original)) as image:
        assert image.getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the fixture does carry GPS
    target = flow.target("image/jpeg")
    flow.send(target, original)
    trend = a_trend(requires="SELFIE", price_standard=4)
    result = _create(gql, token, trendSlug=trend.slug, photoUploadId=target["uploadId"])
    assert result["__typename"] == "GenerationPayload", result
    assert wallet(user) == (16, 4)
    generation = Generation.objects.get()
    upload = Upload.objects.get()
    assert generation.image_key == upload.key and upload.cleaned_at is not None
    # What the GPU reads, and what the upload's URL serves back, is the re-encoded copy alone.
    stored = get_storage().read(upload.key, max_bytes=10**8)
    assert stored != original
    with Image.open(io.BytesIO(stored)) as image:
        assert image.format == "JPEG"
        assert dict(image.getexif()) == {}
        assert not {"exif", "xmp", "icc_profile", "comment"} & set(image.info)
    assert (upload.format, upload.bytes) == ("JPEG", len(stored))
    # Used again, the clean copy is not checked or re-encoded a second time.
    cleaned_at = upload.cleaned_at
    again = _create(gql, token, trendSlug=trend.slug, photoUploadId=target["uploadId"], idempotencyKey=key())
    assert again["__typename"] == "GenerationPayload", again
    assert Upload.objects.get().cleaned_at == cleaned_at


def test_a_quality_the_route_chain_does_not_offer_is_unsupported(gql, alice, shipped_routes):
    token, _, _ = alice
    trend = a_trend(requires="NONE", preferred_model_route="ltx-video")  # ltx-video: DRAFT and STANDARD
    result = _create(gql, token, trendSlug=trend.slug, quality="CINEMA")
    assert (result["__typename"], result["field"]) == ("UnsupportedOption", "quality")
    assert "DRAFT or STANDARD" in result["message"]


def test_tier_routing_follows_the_fallback_chain(gql, alice, shipped_routes, settings):
    settings.GENERATIONS_MAX_ACTIVE_PER_USER = 4
    token, _, _ = alice
    trend = a_trend(requires="NONE", preferred_model_route="wan2.2-ti2v-5b")
    same_family = _create(gql, token, trendSlug=trend.slug, quality="DRAFT")
    assert generation_from(same_family["generation"]["id"]).route_name == "wan2.2-ti2v-5b"  # wan drafts too
    ModelRoute.objects.filter(name="wan2.2-ti2v-5b").update(quality_tiers=["STANDARD", "CINEMA"])
    draft = _create(gql, token, trendSlug=trend.slug, quality="DRAFT")
    cinema = _create(gql, token, trendSlug=trend.slug, quality="CINEMA")
    assert generation_from(draft["generation"]["id"]).route_name == "ltx-video"  # its fallback serves DRAFT
    assert generation_from(cinema["generation"]["id"]).route_name == "wan2.2-ti2v-5b"
    ModelRoute.objects.filter(name="wan2.2-ti2v-5b").update(enabled=False)
    standard = _create(gql, token, trendSlug=trend.slug, quality="STANDARD")
    assert generation_from(standard["generation"]["id"]).route_name == "ltx-video"


def test_not_signed_in_is_unauthenticated(gql, shipped_routes):
    response = gql(CREATE, {"input": {"prompt": "hi", "idempotencyKey": key()}})
    assert response["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert response["data"] is None


def test_credits_granted_later_can_be_spent(gql, alice, shipped_routes):
    token, user, _ = alice
    trend = a_trend(requires="NONE", price_standard=30, price_cinema=40)
    assert _create(gql, token, trendSlug=trend.slug)["__typename"] == "InsufficientCredits"
    credits_grant(user=user, amount=10, reason="test")
    assert _create(gql, token, trendSlug=trend.slug)["__typename"] == "GenerationPayload"
    assert wallet(user) == (0, 30)


def test_a_ready_soul_id_is_used_and_one_that_is_not_ready_is_refused(gql, alice, sign_up, shipped_routes):
    from strawberry.relay import to_base64

    from apps.characters.models import Character

    token, user, _ = alice
    trend = a_trend(requires="SOUL_ID", price_standard=4)
    ready = Character.objects.create(
        owner=user,
        name="me",
        status="READY",
        lora_key=f"characters/{user.pk}/x/lora.safetensors",
        lora_metadata={"family": "tiny-wan", "base_checkpoint": ""},  # made for the trend's route
    )
    training = Character.objects.create(owner=user, name="me too", status="TRAINING")
    bob = User.objects.get(email=sign_up()["user"]["email"])
    theirs = Character.objects.create(
        owner=bob, name="bob", status="READY", lora_key=f"characters/{bob.pk}/y/lora.safetensors"
    )

    made = _create(gql, token, trendSlug=trend.slug, characterId=to_base64("Character", ready.pk))
    assert made["__typename"] == "GenerationPayload", made
    generation = generation_from(made["generation"]["id"])
    assert (generation.character_id, generation.lora_key) == (ready.pk, ready.lora_key)
    not_ready = _create(gql, token, trendSlug=trend.slug, characterId=to_base64("Character", training.pk))
    assert (not_ready["__typename"], not_ready["code"], not_ready["field"]) == (
        "CharacterNotReady",
        "CHARACTER_NOT_READY",
        "characterId",
    )
    other = _create(gql, token, trendSlug=trend.slug, characterId=str(theirs.pk))
    assert (other["__typename"], other["field"]) == ("NotFound", "characterId")
    assert Generation.objects.count() == 1 and wallet(user) == (16, 4)
