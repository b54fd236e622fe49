"""A DRAFT, then finalizeGeneration at CINEMA, end to end on the tiny route (services mode).

A live server, the backend's worker threads on Redis and the GPU lanes (tiny-wan on the CPU) in this
process; everything through GraphQL. The two videos share the seed and the shot plan; the final has more
pixels and more denoising steps, recorded in its timings by the worker.
"""

from __future__ import annotations

import httpx
import pytest

from apps.generations.models import GenerationStatus
from gpu_worker.content_credentials import read_label
from tests.graphql.generations.helpers import a_trend, generation_from, wait_for, wallet
from tests.graphql.generations.stack import C2PA_CHAIN, LiveUser, decode_mp4

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

FIELDS = "id status quality tier seed width height fps frameCount creditsCharged video { url width height }"

FINALIZE = f"""
mutation ($id: ID!, $quality: QualityTier!, $key: String) {{
  finalizeGeneration(id: $id, quality: $quality, idempotencyKey: $key) {{
    __typename
    ... on GenerationPayload {{ generation {{ {FIELDS} }} }}
    ... on Error {{ code message }}
  }}
}}
"""

READ = f"query ($id: ID!) {{ generation(id: $id) {{ {FIELDS} draft {{ id }} finals {{ id }} }} }}"


@pytest.fixture
def stack(asgi_server, django_worker, shipped_routes, settings):
    settings.WELCOME_CREDITS = 20
    settings.STORAGE_BACKEND = "local"
    settings.GENERATIONS_ROUTE_OVERRIDE = "tiny-wan"
    return asgi_server


def _done(generation_id: str) -> bool:
    return generation_from(generation_id).status == GenerationStatus.SUCCEEDED


def test_a_draft_finalized_at_cinema_gives_the_same_shot_with_more_pixels_and_steps(
    stack, gpu_lanes, tmp_path
):
    trend = a_trend(requires="NONE", price_draft=2, price_standard=4, price_cinema=9)
    erin = LiveUser(stack)
    gpu_lanes()
    created = erin.create(trendSlug=trend.slug, quality="DRAFT", aspectRatio="SQUARE_1_1")
    wait_for(lambda: _done(created["id"]), timeout=120, what="the draft to succeed")

    finalized = erin.gql(FINALIZE, {"id": created["id"], "quality": "CINEMA", "key": "final-1"})["data"][
        "finalizeGeneration"
    ]
    assert finalized["__typename"] == "GenerationPayload", finalized
    final_id = finalized["generation"]["id"]
    wait_for(lambda: _done(final_id), timeout=120, what="the final to succeed")

    draft = erin.gql(READ, {"id": created["id"]})["data"]["generation"]
    final = erin.gql(READ, {"id": final_id})["data"]["generation"]
    assert (draft["tier"], final["tier"]) == ("DRAFT", "CINEMA")
    assert final["seed"] == draft["seed"]
    assert final["draft"] == {"id": created["id"]} and draft["finals"] == [{"id": final_id}]
    assert (draft["width"], draft["height"], final["width"], final["height"]) == (32, 32, 64, 64)
    assert draft["frameCount"] == final["frameCount"] == 41 and draft["fps"] == final["fps"] == 8
    assert (draft["creditsCharged"], final["creditsCharged"]) == (2, 9) and wallet(erin.user) == (9, 0)

    rows = {tier: generation_from(gid) for tier, gid in (("DRAFT", created["id"]), ("CINEMA", final_id))}
    assert rows["CINEMA"].plan == rows["DRAFT"].plan  # the same shot plan
    assert rows["CINEMA"].seed_used == rows["DRAFT"].seed_used == draft["seed"]
    render = {tier: row.timings["render"] for tier, row in rows.items()}
    assert (render["DRAFT"]["tier"], render["CINEMA"]["tier"]) == ("DRAFT", "CINEMA")
    assert render["CINEMA"]["steps"] > render["DRAFT"]["steps"]
    pixels = {tier: r["width"] * r["height"] * r["num_frames"] for tier, r in render.items()}
    assert pixels["CINEMA"] > pixels["DRAFT"]

    # The draft carries the visible mark (the DRAFT default), the paid final does not
    assert "watermark" in rows["DRAFT"].timings and "watermark" not in rows["CINEMA"].timings

    # The MP4s really have those sizes, and both carry the AI label
    for generation, size in ((draft, (32, 32)), (final, (64, 64))):
        content = httpx.get(generation["video"]["url"], timeout=30).content
        frames = decode_mp4(content)
        assert (frames.shape[2], frames.shape[1]) == size and frames.shape[0] == 41
        (tmp_path / "video.mp4").write_bytes(content)
        label = read_label(tmp_path / "video.mp4", trust_anchors_pem=C2PA_CHAIN.root_pem)
        assert label.validation_state == "Trusted", label
