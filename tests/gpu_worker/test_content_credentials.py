"""The AI label: every delivered MP4 carries a signed C2PA manifest saying a generative model made it.

Labels are read back with `c2pa.Reader` (through gpu_worker.content_credentials.read_label), trusting the
test run's root certificate; the videos come from the real tiny-wan pipeline and real ffmpeg.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_worker import video
from gpu_worker.content_credentials import (
    TRAINED_ALGORITHMIC_MEDIA,
    ContentCredentials,
    ContentCredentialsError,
    SigningMaterial,
    content_credentials_from_settings,
    make_signing_material,
    read_label,
)
from gpu_worker.settings import LabelSettings, WorkerSettings
from tests.fixtures.gpu import decoded_frames, make_job
from tests.gpu_worker.test_sound import SOUND_KEY, m4a, streams


@pytest.fixture
def clip(tmp_path):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, size=(9, 48, 64, 3), dtype=np.uint8)
    path = tmp_path / "video.mp4"
    video.encode_mp4(frames, path, fps=8)
    return path


def assert_labelled_as_ai_made(label, *, route: str) -> None:
    assert label is not None, "the video has no C2PA manifest"
    assert label.validation_state == "Trusted", label
    assert label.failures == []
    assert label.claim_generator == "Diffuse"
    assert len(label.actions) == 1
    action = label.actions[0]
    assert action["action"] == "c2pa.created"
    assert action["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert route in action["softwareAgent"]["name"]


# --- The signer -------------------------------------------------------------------------------


def test_a_signed_mp4_verifies_against_its_root_and_plays_as_before(clip, c2pa_chain):
    before = decoded_frames(clip)

    ContentCredentials(c2pa_chain.material, producer="Diffuse").sign_mp4(
        clip, route="wan2.2-ti2v-5b", family="wan"
    )

    assert_labelled_as_ai_made(
        read_label(clip, trust_anchors_pem=c2pa_chain.root_pem), route="wan2.2-ti2v-5b"
    )
    assert np.array_equal(decoded_frames(clip), before)  # the label adds a box; the frames are the same
    boxes = video.mp4_top_level_boxes(clip)
    assert boxes.index("moov") < boxes.index("mdat")  # still faststart
    assert not list(clip.parent.glob("*.signed.*"))


def test_a_verifier_that_does_not_trust_the_root_sees_a_valid_but_untrusted_signature(clip, c2pa_chain):
    ContentCredentials(c2pa_chain.material, producer="Diffuse").sign_mp4(clip, route="r", family="wan")

    stranger = make_signing_material(organization="Someone else")
    label = read_label(clip, trust_anchors_pem=stranger.root_pem)

    assert label.validation_state == "Valid"
    assert label.failures == ["signingCredential.untrusted"]


def test_a_video_changed_after_signing_no_longer_verifies(clip, c2pa_chain):
    ContentCredentials(c2pa_chain.material, producer="Diffuse").sign_mp4(clip, route="r", family="wan")
    data = bytearray(clip.read_bytes())
    data[-200] ^= 0xFF  # a byte of the last frame's data, in `mdat`
    clip.write_bytes(bytes(data))

    label = read_label(clip, trust_anchors_pem=c2pa_chain.root_pem)

    assert label.validation_state == "Invalid"
    assert "assertion.bmffHash.mismatch" in label.failures


def test_an_unsigned_video_has_no_label(clip):
    assert read_label(clip) is None


def test_a_key_of_another_certificate_is_refused_before_any_video_is_signed(c2pa_chain):
    other = make_signing_material()
    material = SigningMaterial(c2pa_chain.material.cert_chain_pem, other.material.private_key_pem)

    with pytest.raises(ContentCredentialsError, match="not the key of the first certificate"):
        ContentCredentials(material, producer="Diffuse")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cert_chain_pem": b"not a certificate"}, "not PEM"),
        ({"private_key_pem": b"not a key"}, "not PEM"),
        ({"alg": "md5"}, "must be one of"),
    ],
)
def test_malformed_signing_material_is_refused_with_what_is_wrong(c2pa_chain, changes, message):
    fields = {
        "cert_chain_pem": c2pa_chain.material.cert_chain_pem,
        "private_key_pem": c2pa_chain.material.private_key_pem,
        **changes,
    }
    with pytest.raises(ContentCredentialsError, match=message):
        SigningMaterial(**fields)


# --- Settings ---------------------------------------------------------------------------------


def write_chain(folder, chain):
    cert, key = folder / "c2pa-chain.pem", folder / "c2pa-key.pem"
    cert.write_bytes(chain.material.cert_chain_pem)
    key.write_bytes(chain.material.private_key_pem)
    return cert, key


def test_the_worker_signs_with_the_files_its_settings_name(tmp_path, clip, c2pa_chain):
    cert, key = write_chain(tmp_path, c2pa_chain)
    settings = WorkerSettings.from_env(
        {"C2PA_SIGN_CERT": str(cert), "C2PA_SIGN_KEY": str(key), "C2PA_PRODUCER": "Diffuse"}
    )

    content_credentials_from_settings(settings.label).sign_mp4(clip, route="tiny-wan", family="tiny-wan")

    assert_labelled_as_ai_made(read_label(clip, trust_anchors_pem=c2pa_chain.root_pem), route="tiny-wan")


def test_production_refuses_a_worker_without_signing_material_unless_labels_are_disabled():
    with pytest.raises(ValueError, match="C2PA_SIGN_CERT and C2PA_SIGN_KEY are required in production"):
        LabelSettings.from_env({"APP_ENV": "production"})
    with pytest.raises(ValueError, match="set both or neither"):
        LabelSettings.from_env({"C2PA_SIGN_CERT": "/etc/c2pa/chain.pem"})

    disabled = LabelSettings.from_env({"APP_ENV": "production", "C2PA_DISABLED": "1"})
    assert content_credentials_from_settings(disabled) is None


def test_development_without_signing_material_labels_with_a_chain_made_at_start_up(clip):
    labeller = content_credentials_from_settings(LabelSettings.from_env({}))

    labeller.sign_mp4(clip, route="tiny-wan", family="tiny-wan")

    label = read_label(clip)
    assert label.validation_state == "Valid"  # signed and intact; its root is trusted by no one
    assert label.failures == ["signingCredential.untrusted"]


def test_a_signing_file_that_cannot_be_read_is_a_clear_error(tmp_path):
    settings = LabelSettings.from_env(
        {"C2PA_SIGN_CERT": str(tmp_path / "missing.pem"), "C2PA_SIGN_KEY": str(tmp_path / "key.pem")}
    )
    with pytest.raises(ContentCredentialsError, match="cannot read the signing material"):
        content_credentials_from_settings(settings)


# --- Delivered videos -------------------------------------------------------------------------


def test_the_delivered_video_of_a_tiny_pipeline_run_carries_a_label_that_verifies(
    runner, storage, c2pa_chain
):
    job = make_job(num_frames=9)

    terminal = runner.run(job.to_message())

    assert terminal.kind == "completed", terminal
    assert "label" in terminal.timings
    delivered = storage.root / job.video_key
    assert_labelled_as_ai_made(read_label(delivered, trust_anchors_pem=c2pa_chain.root_pem), route="tiny-wan")
    assert terminal.outputs["video"]["bytes"] == delivered.stat().st_size


def test_a_video_with_sound_is_labelled_after_the_mux_and_keeps_its_track(runner, storage, c2pa_chain):
    storage.write(SOUND_KEY, m4a(3.0), content_type="audio/mp4")
    job = make_job(num_frames=17, sound_key=SOUND_KEY)

    terminal = runner.run(job)

    assert terminal.kind == "completed", terminal
    delivered = storage.root / job.video_key
    assert_labelled_as_ai_made(read_label(delivered, trust_anchors_pem=c2pa_chain.root_pem), route="tiny-wan")
    assert [line.split(": ")[1] for line in streams(delivered)] == ["Video", "Audio"]


def test_a_runner_with_labels_disabled_delivers_an_unlabelled_video(make_runner, storage):
    job = make_job(num_frames=9)

    terminal = make_runner(content_credentials=None).run(job)

    assert terminal.kind == "completed", terminal
    assert "label" not in terminal.timings
    assert read_label(storage.root / job.video_key) is None
