"""A DRAFT, then finalizeGeneration at CINEMA, end to end on the tiny route (services mode).

A live server, the backend's worker threads on Redis and the GPU lanes (tiny-wan on the CPU) in this
process; everything through GraphQL. The two videos share the seed, the shot plan and the trend's sound;
the final has more pixels and more denoising steps (CINEMA's refine pass included), recorded in its timings
by the worker, and its MP4 carries the sound as an AAC track of the clip's length. The selfie makes both
image-to-video jobs, so the refine pass runs on that pipeline too.
"""

from __future__ import annotations

import httpx
import pytest

from apps.generations.models import GenerationStatus
from gpu_worker.content_credentials import read_label
from tests.graphql.generations.helpers import generation_from, wait_for, wallet
from tests.graphql.generations.stack import C2PA_CHAIN, LiveUser, decode_mp4
from tests.integration.test_generation_sound import streams, trend_with_a_sound

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

FIELDS = (
    "id status quality tier seed width height fps frameCount creditsCharged hasSound "
    "video { url width height durationSeconds }"
)

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
    trend = trend_with_a_sound()
    trend.price_draft, trend.price_standard, trend.price_cinema = 2, 4, 9
    trend.save(update_fields=["price_draft", "price_standard", "price_cinema"])
    erin = LiveUser(stack)
    gpu_lanes()
    created = erin.create(
        trendSlug=trend.slug, quality="DRAFT", aspectRatio="SQUARE_1_1", photoUploadId=erin.upload_selfie()
    )
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
    # The draft at the trend's 2 (its render: 0.50 -> 1); the final at CINEMA's render, 12 steps x 176
    # tokens x 5700 per million = 12.04 -> 12, over the trend's 9.
    assert (draft["creditsCharged"], final["creditsCharged"]) == (2, 12) and wallet(erin.user) == (6, 0)
    assert draft["hasSound"] is final["hasSound"] is True

    rows = {tier: generation_from(gid) for tier, gid in (("DRAFT", created["id"]), ("CINEMA", final_id))}
    assert rows["CINEMA"].plan == rows["DRAFT"].plan  # the same shot plan
    assert rows["CINEMA"].seed_used == rows["DRAFT"].seed_used == draft["seed"]
    render = {tier: row.timings["render"] for tier, row in rows.items()}
    assert (render["DRAFT"]["tier"], render["CINEMA"]["tier"]) == ("DRAFT", "CINEMA")
    assert render["CINEMA"]["steps"] > render["DRAFT"]["steps"]
    # CINEMA's refine pass: 4 more steps over the first pass's latents, timed apart within denoise
    assert (render["DRAFT"]["refine_steps"], render["CINEMA"]["refine_steps"]) == (0, 4)
    assert 0 < rows["CINEMA"].timings["denoise_refine"] < rows["CINEMA"].timings["denoise"]
    assert "denoise_refine" not in rows["DRAFT"].timings
    assert render["CINEMA"]["cost"] > render["DRAFT"]["cost"]
    pixels = {tier: r["width"] * r["height"] * r["num_frames"] for tier, r in render.items()}
    assert pixels["CINEMA"] > pixels["DRAFT"]

    # The draft carries the visible mark (the DRAFT default), the paid final does not
    assert "watermark" in rows["DRAFT"].timings and "watermark" not in rows["CINEMA"].timings

    # The MP4s really have those sizes, carry the AI label, and the sound as an AAC stereo track of the
    # clip's length.
    for generation, size in ((draft, (32, 32)), (final, (64, 64))):
        data = httpx.get(generation["video"]["url"], timeout=30).content
        frames = decode_mp4(data)
        assert (frames.shape[2], frames.shape[1]) == size and frames.shape[0] == 41
        (tmp_path / "video.mp4").write_bytes(data)
        label = read_label(tmp_path / "video.mp4", trust_anchors_pem=C2PA_CHAIN.root_pem)
        assert label.validation_state == "Trusted", label
        lines, samples = streams(data)
        assert len(lines) == 2 and "Audio: aac" in lines[1] and "stereo" in lines[1], lines
        assert abs(len(samples) / 48000 - generation["video"]["durationSeconds"]) < 0.05
