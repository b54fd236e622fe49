"""The one job lifecycle (apps/jobs/lifecycle.py) for both kinds of GPU job, on the in-process broker and
the embedded database (no PostgreSQL or Redis needed): events applied once, the hold settled once, pushes
on terminal states, and the one watchdog for silent and long-waiting jobs of every kind."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone

from apps.accounts.models import Device, User
from apps.characters.models import Character, TrainingRun
from apps.credits.selectors import wallet_state
from apps.jobs.dispatch import cancel_flag_is_set
from apps.jobs.lifecycle import job_event_apply, job_watchdog, jobs_reap
from apps.notifications.models import PushMessage
from gpu_worker.contract import JOB_TYPE_TRAINING, OUT_OF_MEMORY, WORKER_LOST, JobEvent
from tests.fixtures.factories import make_training_run, make_user_with_credits

pytestmark = pytest.mark.django_db


def _user() -> User:
    user = make_user_with_credits(100)
    Device.objects.create(user=user, token=f"token-{user.pk}", platform="IOS", app_version="2.0")
    return user


@pytest.fixture
def user() -> User:
    return _user()


def _event(character: Character, kind: str, *, sequence: int | None = None, **fields) -> dict:
    return JobEvent(
        job_id=str(character.pk),
        sequence=sequence if sequence is not None else time.time_ns() // 1000,
        kind=kind,
        job_type=JOB_TYPE_TRAINING,
        **fields,
    ).to_message()


def _completed(character: Character) -> dict:
    key = f"{character.prefix}lora/1/pytorch_lora_weights.safetensors"
    outputs = {
        "lora": {"key": key, "content_type": "application/octet-stream", "bytes": 10, "sha256": "0" * 64},
        "route": "tiny-wan",
        "family": "tiny-wan",
        "base_checkpoint": "",
        "trigger": "sks person",
    }
    return _event(character, "completed", progress=1.0, outputs=outputs)


def test_a_training_event_is_applied_once_and_a_stale_one_changes_nothing(user):
    character, _ = make_training_run(user)
    later = _event(character, "progress", stage="TRAINING", progress=0.5, step=15, total_steps=30)
    earlier = {**later, "sequence": later["sequence"] - 10, "progress": 0.1}
    assert job_event_apply(message=later) == "applied"
    assert job_event_apply(message=later) == "stale"
    assert job_event_apply(message=earlier) == "stale"
    character.refresh_from_db()
    assert (character.training_step, character.training_progress, character.sequence) == (15, 0.5, 2)
    run = TrainingRun.objects.get(character=character)
    assert run.started_at is not None and run.last_event_sequence == later["sequence"]


def test_a_completed_training_is_captured_once_and_pushed_once(user):
    character, _ = make_training_run(user)
    completed = _completed(character)
    assert job_event_apply(message=completed) == "applied"
    assert job_event_apply(message={**completed, "sequence": completed["sequence"] + 1}) == "final"
    character.refresh_from_db()
    assert (character.status, character.lora_metadata["trigger"]) == ("READY", "sks person")
    assert wallet_state(user=user)[:2] == (60, 0)
    assert list(PushMessage.objects.filter(user=user).values_list("kind", flat=True)) == ["CHARACTER_READY"]


def test_a_failed_training_is_released_and_pushed(user):
    character, _ = make_training_run(user)
    failed = _event(character, "failed", reason_code=OUT_OF_MEMORY, retryable=True, message="")
    assert job_event_apply(message=failed) == "applied"
    character.refresh_from_db()
    run = TrainingRun.objects.get(character=character)
    assert (character.status, run.status, run.failure_code) == ("FAILED", "FAILED", OUT_OF_MEMORY)
    assert wallet_state(user=user)[:2] == (100, 0)
    assert list(PushMessage.objects.filter(user=user).values_list("kind", flat=True)) == ["CHARACTER_FAILED"]
    assert cancel_flag_is_set(str(character.pk)) is False  # set only after the commit (on_commit in tests)


def test_a_training_whose_worker_went_silent_fails_worker_lost_and_is_released(user, settings):
    settings.CHARACTERS_TRAINING_STUCK_AFTER_SECONDS = 600
    now = timezone.now()
    character, _ = make_training_run(user, started_at=now - dt.timedelta(seconds=300))
    assert job_watchdog(job_type=JOB_TYPE_TRAINING, job_id=str(character.pk), attempt=1, now=now) == 300
    later = now + dt.timedelta(seconds=301)
    assert job_watchdog(job_type=JOB_TYPE_TRAINING, job_id=str(character.pk), attempt=1, now=later) is None
    run = TrainingRun.objects.get(character=character)
    character.refresh_from_db()
    assert (character.status, run.status, run.failure_code) == ("FAILED", "FAILED", WORKER_LOST)
    assert wallet_state(user=user)[:2] == (100, 0)


def test_the_reaper_expires_a_training_that_waited_too_long_in_its_lane(user, settings):
    settings.CHARACTERS_TRAINING_QUEUE_MAX_WAIT_SECONDS = 3600
    long_ago = timezone.now() - dt.timedelta(hours=2)
    character, _ = make_training_run(user, created_at=long_ago)
    fresh, _ = make_training_run(_user())
    assert jobs_reap() == 1
    run = TrainingRun.objects.get(character=character)
    assert (run.status, run.failure_code) == ("FAILED", "EXPIRED")
    assert TrainingRun.objects.get(character=fresh).status == "RUNNING"
