"""A trend's sound in admin: an upload is probed with ffmpeg, refused with a clear message when it is not
usable audio, and stored normalized (-14 LUFS integrated, true peak at most -1 dBTP) as AAC in storage."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.core.queues import QUEUE_MAINTENANCE
from apps.storage.backends import get_storage
from apps.trends import sound
from apps.trends.models import Trend
from tests.apps.trends.helpers import make_category, make_trend, png_bytes
from tests.apps.trends.test_admin import _form, curator  # noqa: F401 (the fixture)

pytestmark = pytest.mark.django_db


def encoded(samples: np.ndarray, fmt: str, tmp_path: Path) -> bytes:
    """Float32 stereo 48 kHz samples as a real file of `fmt` (mp3, wav, m4a, aac), through ffmpeg."""
    out = tmp_path / f"input.{fmt}"
    subprocess.run(
        [sound.ffmpeg_exe(), "-v", "error", "-y", "-f", "f32le", "-ar", "48000", "-ac", "2", "-i", "-",
         str(out)],
        input=np.ascontiguousarray(samples, dtype=np.float32).tobytes(),
        check=True,
    )  # fmt: skip
    return out.read_bytes()


def tune(seconds: float = 4.0, gain: float = 1.0) -> np.ndarray:
    return (sound.synthesize_tune(seed=7, seconds=seconds) * gain).astype(np.float32)


def post_sound(client, trend: Trend, upload: SimpleUploadedFile, **fields):
    sound_fields = {
        "sound_title": "Summer Night",
        "sound_artist": "The Demo Band",
        "sound_licence": "Licensed from Example Music for in-app use until 2027.",
        **fields,
    }
    data = _form(trend.category, slug=trend.slug, title=trend.title, sound_upload=upload, **sound_fields)
    return client.post(f"/admin/trends/trend/{trend.pk}/change/", data)


def errors_of(response) -> str:
    assert response.status_code == 200, "the form was accepted"
    return str(response.context["adminform"].form.errors.get("sound_upload"))


def test_a_loud_mp3_is_stored_as_aac_at_minus_14_lufs_under_minus_1_dbtp(client, curator, tmp_path):  # noqa: F811
    trend = make_trend(category=make_category())
    # Hot and clipped: about -8 LUFS with peaks at full scale
    loud = np.clip(tune(gain=4.0), -1.0, 1.0)
    upload = SimpleUploadedFile("song.mp3", encoded(loud, "mp3", tmp_path), content_type="audio/mpeg")
    response = post_sound(client, trend, upload)
    assert response.status_code == 302, errors_of(response)

    trend.refresh_from_db()
    assert trend.sound_key.startswith("trends/sounds/") and trend.sound_key.endswith(".m4a")
    assert (trend.sound_title, trend.sound_artist) == ("Summer Night", "The Demo Band")
    assert trend.sound_licence.startswith("Licensed from Example Music")
    stored = tmp_path / "stored.m4a"
    stored.write_bytes(get_storage().read(trend.sound_key, max_bytes=10 << 20))
    probed = sound.probe(stored)
    assert probed.format == "mov,mp4,m4a,3gp,3g2,mj2" and probed.has_audio
    text = subprocess.run(
        [sound.ffmpeg_exe(), "-hide_banner", "-i", str(stored)], capture_output=True, text=True
    ).stderr
    assert "Audio: aac" in text and "stereo" in text
    samples = sound.decode(stored)
    assert abs(sound.loudness_lufs(samples) - (-14.0)) <= 1.0
    assert sound.true_peak_dbtp(samples) <= -1.0
    assert abs(len(samples) / sound.SAMPLE_RATE - 4.0) < 0.1
    assert trend.sound_duration_seconds == pytest.approx(4.0, abs=0.1)


def test_a_quiet_mono_wav_is_raised_to_minus_14_lufs(client, curator, tmp_path):  # noqa: F811
    trend = make_trend(category=make_category())
    quiet = tune(gain=0.05)
    wav = tmp_path / "mono.wav"
    subprocess.run(
        [sound.ffmpeg_exe(), "-v", "error", "-f", "f32le", "-ar", "48000", "-ac", "2", "-i", "-",
         "-ac", "1", str(wav)],
        input=quiet.tobytes(),
        check=True,
    )  # fmt: skip
    response = post_sound(client, trend, SimpleUploadedFile("quiet.wav", wav.read_bytes()))
    assert response.status_code == 302, errors_of(response)
    trend.refresh_from_db()
    stored = tmp_path / "stored.m4a"
    stored.write_bytes(get_storage().read(trend.sound_key, max_bytes=10 << 20))
    samples = sound.decode(stored)
    assert abs(sound.loudness_lufs(samples) - (-14.0)) <= 1.0
    assert sound.true_peak_dbtp(samples) <= -1.0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("cover.png", png_bytes((64, 64)), "Upload an MP3, AAC, WAV or M4A audio file."),
        ("notes.mp3", b"these are not the sounds you are looking for" * 20, "not audio that can be read"),
    ],
)
def test_a_file_that_is_not_audio_is_refused(client, curator, name, content, message):  # noqa: F811
    trend = make_trend(category=make_category())
    response = post_sound(client, trend, SimpleUploadedFile(name, content))
    assert message in errors_of(response)
    trend.refresh_from_db()
    assert trend.sound_key == ""
    assert get_storage().list_keys("trends/sounds/") == []


def test_a_truncated_m4a_is_refused(client, curator, tmp_path):  # noqa: F811
    trend = make_trend(category=make_category())
    whole = encoded(tune(), "wav", tmp_path)
    response = post_sound(client, trend, SimpleUploadedFile("cut.wav", whole[:300]))
    assert "damaged" in errors_of(response) or "not audio" in errors_of(response)
    assert Trend.objects.get(pk=trend.pk).sound_key == ""


def test_a_sound_over_the_length_limit_is_refused(client, curator, settings, tmp_path):  # noqa: F811
    settings.TRENDS_SOUND_MAX_SECONDS = 3
    trend = make_trend(category=make_category())
    response = post_sound(client, trend, SimpleUploadedFile("long.m4a", encoded(tune(4.0), "m4a", tmp_path)))
    assert "The sound is 4.0 s long; keep it to 3 s." in errors_of(response)
    assert Trend.objects.get(pk=trend.pk).sound_key == ""


def test_a_file_over_the_size_limit_is_refused(client, curator, settings, tmp_path):  # noqa: F811
    settings.TRENDS_SOUND_MAX_BYTES = 100 * 1024
    trend = make_trend(category=make_category())
    wav = encoded(tune(4.0), "wav", tmp_path)  # 4 s of 32-bit float stereo: 1.5 MB
    response = post_sound(client, trend, SimpleUploadedFile("big.wav", wav))
    assert "The file is over 100 KB." in errors_of(response)
    assert Trend.objects.get(pk=trend.pk).sound_key == ""


def test_a_silent_file_is_refused(client, curator, tmp_path):  # noqa: F811
    trend = make_trend(category=make_category())
    silence = np.zeros((4 * 48000, 2), dtype=np.float32)
    response = post_sound(client, trend, SimpleUploadedFile("quiet.wav", encoded(silence, "wav", tmp_path)))
    assert "This sound is silent." in errors_of(response)


def test_a_sound_needs_a_title(client, curator, tmp_path):  # noqa: F811
    trend = make_trend(category=make_category())
    response = post_sound(
        client, trend, SimpleUploadedFile("a.mp3", encoded(tune(), "mp3", tmp_path)), sound_title=""
    )
    assert response.status_code == 200
    assert "Give the sound a title" in str(response.context["adminform"].form.errors)


def test_the_demo_catalogue_gets_synthesized_sounds(tmp_path):
    from django.core.management import call_command

    call_command("load_trends", "--no-previews", verbosity=0)
    trends = list(Trend.objects.all())
    assert len(trends) == 34 and all(trend.sound_key and trend.sound_title for trend in trends)
    stored = tmp_path / "demo.m4a"
    stored.write_bytes(get_storage().read(trends[0].sound_key, max_bytes=10 << 20))
    samples = sound.decode(stored)
    assert abs(len(samples) / sound.SAMPLE_RATE - 6.0) < 0.1
    assert abs(sound.loudness_lufs(samples) - (-14.0)) <= 1.0
    assert sound.true_peak_dbtp(samples) <= -1.0


def test_the_change_page_plays_the_sound_and_it_can_be_removed(client, curator, tmp_path):  # noqa: F811
    trend = make_trend(category=make_category())
    response = post_sound(client, trend, SimpleUploadedFile("a.mp3", encoded(tune(), "mp3", tmp_path)))
    assert response.status_code == 302, errors_of(response)
    trend.refresh_from_db()
    page = client.get(f"/admin/trends/trend/{trend.pk}/change/").content.decode()
    assert "<audio controls" in page and trend.sound_key in page
    assert client.get("/admin/trends/trend/").status_code == 200

    data = _form(trend.category, slug=trend.slug, title=trend.title, remove_sound="on")
    response = client.post(f"/admin/trends/trend/{trend.pk}/change/", data)
    assert response.status_code == 302
    trend.refresh_from_db()
    assert (trend.sound_key, trend.has_sound, trend.sound_duration_seconds) == ("", False, None)


def _exists(key: str) -> bool:
    return get_storage().head(key) is not None


def _a_video_reading(sound_key: str):
    """A generation being made (QUEUED) with that sound, as generation_create stores one."""
    from django.utils import timezone

    from apps.accounts.models import User
    from apps.generations.models import Generation

    owner = User.objects.create_user(email="viewer@example.com", password="a-long-test-password-42")
    return Generation.objects.create(
        owner=owner, sound_key=sound_key, aspect_ratio="SQUARE_1_1", duration_seconds=5, quality="STANDARD",
        lane="INSTANT", seed=1, quoted_credits=4, route_name="tiny-wan", width=64, height=64, num_frames=41,
        queued_at=timezone.now(), idempotency_key="k", request_hash="h",
    )  # fmt: skip


def test_a_replaced_or_removed_sound_is_deleted_once_no_trend_and_no_video_in_progress_uses_it(
    client,
    curator,  # noqa: F811
    django_worker,
    tmp_path,
    monkeypatch,
):
    from apps.trends import services, tasks
    from tests.graphql.generations.helpers import wait_for

    monkeypatch.setattr(tasks, "SOUND_DELETE_RETRY_MS", 100)  # ask again soon while a video reads it
    outcomes: list[str] = []
    delete_unused = services.trend_sound_delete_unused

    def recorded(*, key: str) -> str:
        outcomes.append(delete_unused(key=key))
        return outcomes[-1]

    monkeypatch.setattr(services, "trend_sound_delete_unused", recorded)
    trend = make_trend(category=make_category())
    assert (
        post_sound(client, trend, SimpleUploadedFile("a.mp3", encoded(tune(), "mp3", tmp_path))).status_code
        == 302
    )
    first = Trend.objects.get(pk=trend.pk).sound_key
    video = _a_video_reading(first)

    # Replaced: the first file stays while the video in progress reads it, then goes.
    replaced = post_sound(client, trend, SimpleUploadedFile("b.wav", encoded(tune(3.0), "wav", tmp_path)))
    assert replaced.status_code == 302, errors_of(replaced)
    second = Trend.objects.get(pk=trend.pk).sound_key
    assert second != first and _exists(second)
    wait_for(lambda: "busy" in outcomes, what="the worker to find the first sound still read")
    assert _exists(first)
    type(video).objects.filter(pk=video.pk).update(status="SUCCEEDED")
    wait_for(lambda: not _exists(first), what="the replaced sound to be deleted")

    # Removed in admin: its file goes too.
    data = _form(trend.category, slug=trend.slug, title=trend.title, remove_sound="on")
    assert client.post(f"/admin/trends/trend/{trend.pk}/change/", data).status_code == 302
    wait_for(lambda: not _exists(second), what="the removed sound to be deleted")

    # A sound two trends share (load_trends' demo loops) stays until the last of them is deleted.
    shared = "trends/sounds/shared.m4a"
    get_storage().write(shared, sound.encode_m4a(tune(1.0)), content_type=sound.SOUND_CONTENT_TYPE)
    one, other = (make_trend(category=trend.category, sound_key=shared, sound_title="Loop") for _ in range(2))
    assert client.post(f"/admin/trends/trend/{one.pk}/delete/", {"post": "yes"}).status_code == 302
    django_worker.broker.join(QUEUE_MAINTENANCE, timeout=60_000)
    django_worker.join()
    assert _exists(shared)
    assert client.post(f"/admin/trends/trend/{other.pk}/delete/", {"post": "yes"}).status_code == 302
    wait_for(lambda: not _exists(shared), what="the last user's sound to be deleted")


def test_load_trends_gives_trends_made_before_sounds_their_sound_and_leaves_removed_ones_silent():
    from django.core.management import call_command

    call_command("load_trends", "--no-previews", "--no-sounds", verbosity=0)
    assert not Trend.objects.exclude(sound_key="").exists()  # as a database from before sounds
    removed = Trend.objects.order_by("slug").first()
    Trend.objects.filter(pk=removed.pk).update(sound_title="Taken down")  # an admin removed its sound

    call_command("load_trends", "--no-previews", verbosity=0)  # make run, again

    silent = list(Trend.objects.filter(sound_key="").values_list("slug", flat=True))
    assert silent == [removed.slug]
    assert Trend.objects.exclude(sound_key="").count() == 33
    assert all(
        _exists(key) for key in set(Trend.objects.exclude(sound_key="").values_list("sound_key", flat=True))
    )
