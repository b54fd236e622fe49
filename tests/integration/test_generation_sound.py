"""A trend's sound in the delivered video, end to end in services mode: createGeneration on a trend with a
sound gives an MP4 with an AAC stereo track of the clip's length (muxed by the GPU worker after the GPU is
released); `withSound: false` gives a video with no audio stream; the API says which (`hasSound`)."""

from __future__ import annotations

import subprocess
import tempfile

import httpx
import imageio_ffmpeg
import numpy as np
import pytest

from apps.storage.backends import get_storage
from apps.trends import sound
from apps.trends.models import Trend
from tests.graphql.generations.helpers import a_trend, generation_from, wait_for
from tests.graphql.generations.stack import LiveUser

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

RESULT = """query ($id: ID!) { generation(id: $id) { status hasSound video { url durationSeconds }
  trend { hasSound sound { title artist licence } } } }"""


@pytest.fixture
def stack(asgi_server, django_worker, shipped_routes, settings):
    settings.WELCOME_CREDITS = 40
    settings.STORAGE_BACKEND = "local"
    return asgi_server


def trend_with_a_sound() -> Trend:
    """A trend whose sound was stored as the admin stores one: normalized, AAC, in apps.storage."""
    prepared = sound.sound_prepare(
        sound.encode_m4a(sound.synthesize_tune(seed=1, seconds=3.0)), max_seconds=60, max_bytes=10 << 20
    )
    key = "trends/sounds/e2e.m4a"
    get_storage().write(key, prepared.data, content_type=sound.SOUND_CONTENT_TYPE)
    return a_trend(
        requires="SELFIE", sound_key=key, sound_title="Night Drive", sound_artist="Demo", sound_licence="CC0"
    )


def streams(data: bytes) -> tuple[list[str], np.ndarray]:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(data)
        handle.flush()
        text = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", handle.name],
            capture_output=True,
            text=True,
        ).stderr
        audio = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", handle.name, "-map", "0:a:0?",
             "-f", "f32le", "-ac", "2", "-ar", "48000", "-"],
            capture_output=True,
        ).stdout  # fmt: skip
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("Stream #")]
    return lines, np.frombuffer(audio, np.float32).reshape(-1, 2)


def test_a_trend_sound_is_in_the_mp4_and_without_sound_the_video_is_silent(stack, gpu_lanes):
    trend = trend_with_a_sound()
    alice = LiveUser(stack)
    with_sound = alice.create(trendSlug=trend.slug, photoUploadId=alice.upload_selfie())
    silent = alice.create(trendSlug=trend.slug, photoUploadId=alice.upload_selfie(), withSound=False)
    assert generation_from(with_sound["id"]).sound_key == "trends/sounds/e2e.m4a"
    assert generation_from(silent["id"]).sound_key == ""

    gpu_lanes()
    for created in (with_sound, silent):
        wait_for(
            lambda created=created: generation_from(created["id"]).status in ("SUCCEEDED", "FAILED"),
            timeout=240,
            what="the video",
        )

    done = alice.gql(RESULT, {"id": with_sound["id"]})["data"]["generation"]
    assert (done["status"], done["hasSound"]) == ("SUCCEEDED", True)
    assert done["trend"] == {
        "hasSound": True,
        "sound": {"title": "Night Drive", "artist": "Demo", "licence": "CC0"},
    }
    lines, samples = streams(httpx.get(done["video"]["url"], timeout=30).content)
    assert len(lines) == 2 and "Video: h264" in lines[0], lines
    assert "Audio: aac" in lines[1] and "stereo" in lines[1], lines
    assert abs(len(samples) / 48000 - done["video"]["durationSeconds"]) < 0.05
    assert float(np.abs(samples).max()) > 0.05

    quiet = alice.gql(RESULT, {"id": silent["id"]})["data"]["generation"]
    assert (quiet["status"], quiet["hasSound"]) == ("SUCCEEDED", False)
    lines, samples = streams(httpx.get(quiet["video"]["url"], timeout=30).content)
    assert len(lines) == 1 and "Video: h264" in lines[0] and len(samples) == 0, lines
