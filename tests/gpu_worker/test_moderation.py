"""Image moderation in the GPU worker, on the real tiny-wan pipeline and a tiny random-weight ViT
classifier (tests/fixtures/moderation.py). Outcomes are chosen with thresholds: 0 flags every image,
above 1 flags none."""

from __future__ import annotations

import pytest

from gpu_worker.contract import (
    MODEL_UNAVAILABLE,
    MODERATION,
    STAGE_DENOISING,
    ContractError,
    GenerationJob,
    JobEvent,
    ModerationSpec,
)
from tests.fixtures.gpu import image_bytes, make_job
from tests.fixtures.moderation import CLASSIFIER, LABELS

FLAG_ALL = {"nsfw": 0.0}
PASS_ALL = {"nsfw": 1.01}


@pytest.fixture
def moderated_runner(make_runner, classifier_root):
    return make_runner(model_root=classifier_root)


def _selfie_job(storage, thresholds, **fields) -> GenerationJob:
    storage.write("uploads/u1/selfie", image_bytes(96, 128, seed=3), content_type="image/png")
    return make_job(
        image_key="uploads/u1/selfie",
        width=32,
        height=48,
        aspect_ratio="9:16",
        moderation=ModerationSpec(model=CLASSIFIER, thresholds=thresholds, output_frames=3),
        **fields,
    )


def _stored(storage, job) -> list[str]:
    folder = storage.root / job.output_prefix
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_flagged_input_photo_fails_moderation_before_any_denoising(moderated_runner, storage, event_log):
    job = _selfie_job(storage, FLAG_ALL)

    terminal = moderated_runner.run(job.to_message())

    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", MODERATION, False)
    verdict = terminal.moderation["input"]
    assert verdict["flagged"] is True and verdict["categories"] == ["nsfw"]
    assert set(verdict["scores"]) == set(LABELS) and verdict["model"] == CLASSIFIER
    assert "output" not in terminal.moderation
    assert not any(event.stage == STAGE_DENOISING for event in event_log.of(job.job_id))
    assert _stored(storage, job) == []


def test_a_flagged_output_is_uploaded_for_review_and_says_so(moderated_runner, storage):
    # No input photo (text to video): only the output is classified.
    job = make_job(moderation=ModerationSpec(model=CLASSIFIER, thresholds=FLAG_ALL))

    terminal = moderated_runner.run(job)

    assert terminal.kind == "completed"
    assert terminal.moderation["output"]["flagged"] is True
    assert terminal.moderation["output"]["categories"] == ["nsfw"]
    assert "input" not in terminal.moderation
    assert _stored(storage, job) == ["poster.jpg", "video.mp4"]  # kept for staff to review
    assert isinstance(terminal.timings["moderation"], float)


def test_under_the_thresholds_input_and_output_pass(moderated_runner, storage):
    job = _selfie_job(storage, PASS_ALL)

    terminal = moderated_runner.run(job)

    assert terminal.kind == "completed"
    assert terminal.moderation["input"]["flagged"] is False
    assert terminal.moderation["output"]["flagged"] is False
    assert terminal.moderation["output"]["categories"] == []


def test_a_category_without_a_threshold_never_flags(moderated_runner, storage):
    job = _selfie_job(storage, {"violence": 0.0})  # not one of the model's labels
    assert moderated_runner.run(job).moderation["output"]["flagged"] is False


def test_a_job_without_moderation_is_not_classified(moderated_runner, storage):
    terminal = moderated_runner.run(make_job())
    assert terminal.kind == "completed"
    assert terminal.moderation == {}
    assert "moderation" not in terminal.timings


def test_a_worker_without_the_classifier_folder_reports_the_model_unavailable(make_runner, tmp_path):
    runner = make_runner(model_root=tmp_path / "empty")
    terminal = runner.run(make_job(moderation=ModerationSpec(model=CLASSIFIER, thresholds=FLAG_ALL)))
    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", MODEL_UNAVAILABLE, True)


# --- The contract ----------------------------------------------------------------------------------


def test_the_moderation_spec_travels_in_the_job_message_and_old_messages_are_still_read():
    job = make_job(moderation=ModerationSpec(model=CLASSIFIER, thresholds={"nsfw": 0.5}, output_frames=2))
    message = job.to_message()
    assert message["moderation"] == {"model": CLASSIFIER, "thresholds": {"nsfw": 0.5}, "output_frames": 2}
    assert GenerationJob.from_message(message).moderation == job.moderation

    old = make_job().to_message()
    del old["moderation"]
    assert GenerationJob.from_message(old).moderation is None


@pytest.mark.parametrize(
    "spec",
    [
        {"model": "", "thresholds": {}},
        {"model": "../etc", "thresholds": {}},
        {"model": CLASSIFIER, "thresholds": {"nsfw": -1}},
        {"model": CLASSIFIER, "thresholds": {"nsfw": "high"}},
        {"model": CLASSIFIER, "thresholds": {}, "output_frames": 0},
        {"thresholds": {}},
    ],
)
def test_a_malformed_moderation_spec_breaks_the_contract(spec):
    message = make_job().to_message()
    message["moderation"] = spec
    with pytest.raises(ContractError):
        GenerationJob.from_message(message)


def test_events_without_a_moderation_verdict_are_still_read():
    event = JobEvent(job_id="g", sequence=1, kind="completed").to_message()
    del event["moderation"]
    assert JobEvent.from_message(event).moderation == {}
    with pytest.raises(ContractError):
        JobEvent.from_message({**event, "moderation": {"elsewhere": {}}})
