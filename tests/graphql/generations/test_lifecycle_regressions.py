"""Regressions of the drift between the generation and training lifecycles (issue: one job lifecycle).

1. A Soul ID in daily use is never purged: a generation with it counts as a use.
2. Live subscribers see the new shot plan after a fallback to a route of another model family.
3. The Soul ID's trigger token (what its LoRA was trained with) is in the generation's prompt.
4. A DomainError nobody mapped to a GraphQL error type fails loudly, never as a validation error.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone
from strawberry.relay import to_base64

from apps.characters.models import Character
from apps.characters.services import characters_purge_expired
from apps.core.errors import DomainError, ErrorCode
from apps.jobs.lifecycle import job_event_apply
from gpu_worker.contract import OUT_OF_MEMORY, JobEvent
from graphql_schema.errors import UnmappedDomainError, error_from
from tests.fixtures.factories import make_ready_soul_id
from tests.graphql.generations.helpers import CREATE, a_trend, generation_from, key
from tests.graphql.generations.stack import LiveUser, subscribe

WAN = {"family": "wan22", "base_checkpoint": "Wan2.2-TI2V-5B-Diffusers"}
TRIGGER = "zxq person"


def _soul_id(user, *, last_used_at=None) -> Character:
    return make_ready_soul_id(
        user, lora_metadata=dict(WAN, trigger=TRIGGER), last_used_at=last_used_at or timezone.now()
    )


def _wan_trend(**fields):
    # wan2.2-ti2v-5b (STANDARD, CINEMA) falls back to ltx-video (DRAFT, STANDARD): another model family.
    fields.setdefault("requires", "NONE")
    return a_trend(
        preferred_model_route="wan2.2-ti2v-5b", price_standard=4, default_quality="STANDARD", **fields
    )


@pytest.fixture
def alice(sign_up, settings):
    settings.WELCOME_CREDITS = 20
    settings.GENERATIONS_ROUTE_OVERRIDE = ""  # route by the trend's chain
    auth = sign_up()
    from apps.accounts.models import User

    return auth["accessToken"], User.objects.get(email=auth["user"]["email"])


@pytest.mark.django_db
def test_a_soul_id_used_by_a_generation_is_not_purged_for_retention(gql, alice, shipped_routes, settings):
    token, user = alice
    long_ago = timezone.now() - dt.timedelta(days=settings.CHARACTERS_RETENTION_DAYS + 30)
    character = _soul_id(user, last_used_at=long_ago)
    trend = _wan_trend(requires="SOUL_ID")
    made = gql(
        CREATE,
        {
            "input": {
                "trendSlug": trend.slug,
                "characterId": to_base64("Character", character.pk),
                "idempotencyKey": key(),
            }
        },
        token=token,
    )["data"]["createGeneration"]
    assert made["__typename"] == "GenerationPayload", made
    character.refresh_from_db()
    assert character.last_used_at > timezone.now() - dt.timedelta(minutes=1)
    assert characters_purge_expired() == []
    assert Character.objects.filter(pk=character.pk, status="READY").exists()


@pytest.mark.django_db
def test_the_soul_id_trigger_token_is_in_the_generation_prompt(gql, alice, shipped_routes):
    token, user = alice
    character = _soul_id(user)
    trend = _wan_trend(requires="SOUL_ID")
    made = gql(
        CREATE,
        {
            "input": {
                "trendSlug": trend.slug,
                "characterId": to_base64("Character", character.pk),
                "idempotencyKey": key(),
            }
        },
        token=token,
    )["data"]["createGeneration"]
    prompt = made["generation"]["plan"]["prompt"]
    assert TRIGGER in prompt, prompt
    assert TRIGGER in generation_from(made["generation"]["id"]).plan["prompt"]


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_subscribers_get_the_new_plan_after_a_fallback_to_another_model_family(
    asgi_server, shipped_routes, settings
):
    settings.WELCOME_CREDITS = 20
    settings.GENERATIONS_ROUTE_OVERRIDE = ""
    settings.GENERATIONS_RETRIES_PER_ROUTE = 0  # the first retryable failure moves to the fallback route
    alice = LiveUser(asgi_server)
    trend = _wan_trend()
    generation_id = alice.create(trendSlug=trend.slug)["id"]
    socket = alice.socket()
    first = subscribe(socket, "g", generation_id)
    wan_prompt = first["generation"]["plan"]["prompt"]

    generation = generation_from(generation_id)
    failed = JobEvent(
        job_id=str(generation.pk),
        sequence=time.time_ns() // 1000,
        kind="failed",
        reason_code=OUT_OF_MEMORY,
        retryable=True,
        attempt=1,
    )
    assert job_event_apply(message=failed.to_message()) == "applied"
    moved = generation_from(generation_id)
    assert (moved.route_name, moved.attempt) == ("ltx-video", 2)

    update = socket.next_for("g")["payload"]["data"]["generationUpdated"]
    assert update["generation"]["status"] == "QUEUED"
    assert update["generation"]["plan"]["prompt"] == moved.plan["prompt"] != wan_prompt


class _NobodyMappedThis(DomainError):
    code = ErrorCode.VALIDATION


def test_an_unmapped_domain_error_fails_loudly():
    with pytest.raises(UnmappedDomainError):
        error_from(_NobodyMappedThis("surprise"))


def test_every_domain_error_raised_by_services_has_a_graphql_type():
    import apps.core.errors as domain

    def subclasses(klass):
        for sub in klass.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for klass in subclasses(domain.DomainError):
        if klass.__module__ != domain.__name__ or klass.__name__ == "Unauthenticated":
            continue  # test-local classes; Unauthenticated is a top-level error, never a result type
        exc = klass.__new__(klass)
        exc.message, exc.field, exc.extra = "m", None, {}
        for name in ("required", "balance", "retry_after_seconds", "accepted", "maximum", "count"):
            setattr(exc, name, 1)
        assert error_from(exc).code == klass.code
