"""Shared by the generation tests (GraphQL, services, integration): documents, builders, fixtures.

Its fixtures (`shipped_routes`, `gpu_lanes`) are in tests/fixtures/generations.py.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

from apps.credits.models import CreditEntry, CreditHold, Wallet
from apps.generations.models import Generation
from tests.apps.trends.helpers import make_category, make_trend
from tests.fixtures.characters import make_photos

GENERATION_FIELDS = """
  id status stage progress queuePosition etaSeconds creditsCharged price createdAt finishedAt
  aspectRatio durationSeconds quality speed prompt
  failure { code message retryable }
  trend { slug title }
  plan { cameraBody lens focalLengthMm aperture movement movementStrength lighting colorMood pacing prompt
         negativePrompt styleKeywords }
  video { url width height durationSeconds fps bytes contentType }
  poster { url width height durationSeconds fps bytes contentType }
"""

ERRORS = """
  ... on Error { code message }
  ... on ValidationError { field }
  ... on NotFound { field }
  ... on UnsupportedOption { field }
  ... on IdempotencyKeyReused { field }
  ... on IdempotencyInProgress { field }
  ... on UploadInvalid { field reason }
  ... on InsufficientCredits { required balance }
  ... on RateLimited { retryAfterSeconds }
  ... on CharacterNotReady { field }
"""

QUOTE = """
query ($input: GenerationInput!) {
  generationQuote(input: $input) {
    __typename
    ... on QuotePayload { credits etaSeconds balance aspectRatio durationSeconds quality speed }
    ... on Error { code message }
    ... on ValidationError { field }
    ... on NotFound { field }
    ... on UnsupportedOption { field }
    ... on UploadInvalid { field reason }
    ... on CharacterNotReady { field }
  }
}
"""

CREATE = f"""
mutation ($input: GenerationInput!) {{
  createGeneration(input: $input) {{
    __typename
    ... on GenerationPayload {{ generation {{ {GENERATION_FIELDS} }} }}
    {ERRORS}
  }}
}}
"""

CANCEL = f"""
mutation ($id: ID!) {{
  cancelGeneration(id: $id) {{
    __typename
    ... on GenerationPayload {{ generation {{ {GENERATION_FIELDS} }} }}
    {ERRORS}
  }}
}}
"""

DELETE = """
mutation ($id: ID!) {
  deleteGeneration(id: $id) { __typename ... on DeletePayload { id } ... on Error { code message } }
}
"""

SHARE = """
mutation ($id: ID!, $channel: String) {
  recordShare(generationId: $id, channel: $channel) {
    __typename
    ... on SharePayload { generation { id } }
    ... on Error { code message }
    ... on ValidationError { field }
  }
}
"""

GENERATION = f"query ($id: ID!) {{ generation(id: $id) {{ {GENERATION_FIELDS} }} }}"

NODE = "query ($id: ID!) { node(id: $id) { __typename ... on Generation { id status } } }"

GENERATIONS = f"""
query ($first: Int, $after: String) {{
  generations(first: $first, after: $after) {{
    edges {{ cursor node {{ {GENERATION_FIELDS} }} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}
"""

SUBSCRIBE = f"""
subscription ($id: ID!) {{
  generationUpdated(id: $id) {{ sequence generation {{ {GENERATION_FIELDS} }} }}
}}
"""


def a_trend(**fields: Any):
    category = make_category(f"cat-{uuid.uuid4().hex[:8]}")
    return make_trend(category=category, **fields)


def key() -> str:
    return str(uuid.uuid4())


@functools.cache
def selfie_bytes() -> bytes:
    """A portrait that passes the selfie checks (one face, sharp, exposed)."""
    return make_photos.portrait_jpeg()


def wallet(user) -> tuple[int, int]:
    row = Wallet.objects.filter(user=user).values_list("balance", "held").first()
    return row or (0, 0)


def ledger(user) -> list[tuple[str, int]]:
    """(kind, amount) of the user's entries, oldest first."""
    return list(
        CreditEntry.objects.filter(wallet__user=user).order_by("created_at").values_list("kind", "amount")
    )


def hold_of(generation: Generation) -> CreditHold | None:
    return CreditHold.objects.filter(owner=f"generations.generation:{generation.pk}").first()


def generation_from(global_id: str) -> Generation:
    from strawberry.relay import from_base64

    return Generation.objects.get(pk=from_base64(global_id)[1])


def route_set_steps(name: str, steps: int, *, tier: str = "STANDARD") -> None:
    """Makes a route's jobs at `tier` run `steps` denoising steps (the tier's render profile decides), at
    the price they had: the price follows steps x latent tokens, so the route's price per unit is scaled
    down as much as the steps go up (tests that make jobs long for timing reasons charge what they did)."""
    from apps.generations.models import ModelRoute

    route = ModelRoute.objects.get(name=name)
    before = route.profile(tier)
    profiles = {**route.render_profiles, tier: before.to_dict() | {"steps": steps}}
    price = route.credits_per_million_cost * before.steps / steps
    ModelRoute.objects.filter(pk=route.pk).update(
        steps=steps, render_profiles=profiles, credits_per_million_cost=price
    )


def wait_for(condition: Callable[[], Any], *, timeout: float = 60, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
