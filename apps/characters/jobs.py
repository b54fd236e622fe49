"""The training kind of GPU job: how the one job lifecycle (apps/jobs) reads, sends and changes a Soul ID's
training.

A training's job is the Soul ID's latest TrainingRun (one per attempt; the run owns the credit hold). The
job id is the Soul ID's id. A failed training is not retried by the backend: the user trains again.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from PIL import Image

import gpu_worker.contract as contract
from apps.jobs.kinds import Job, JobKind, Outcome, register
from apps.notifications.services import push_notify_character_finished
from apps.organizations.webhooks import webhook_event_emit_safely
from apps.storage.backends import StorageError, get_storage

from .events import character_changed
from .models import Character, CharacterStatus, PhotoStatus, TrainingRun, TrainingStatus

logger = logging.getLogger(__name__)

FAILED_MESSAGE = "Training did not work. Try again."
# Training failure codes -> the reasons a push can name (apps/notifications/messages.py).
PUSH_REASONS = {contract.BAD_INPUT: "BAD_INPUT", contract.TIMED_OUT: "TIMED_OUT"}


def _delete_keys(keys: list[str]) -> None:
    storage = get_storage()
    for key in keys:
        try:
            storage.delete(key)
        except StorageError:  # the erasure job sweeps the Soul ID's prefix in any case
            logger.exception("could not delete a Soul ID object")


def _delete_folder(folder: str) -> None:
    try:
        get_storage().delete_prefix(folder)
    except StorageError:
        logger.exception("could not delete a replaced Soul ID LoRA")


def _thumbnail(character: Character) -> None:
    """The first distinct accepted photo's face crop, copied as the Soul ID's thumbnail (a JPEG, no
    metadata: the crops are made that way)."""
    photo = character.photos.filter(status=PhotoStatus.ACCEPTED).first()
    if photo is None or not photo.crop_key:
        return
    storage = get_storage()
    key = f"{character.prefix}thumbnail.jpg"
    data = storage.read(photo.crop_key, max_bytes=settings.UPLOAD_MAX_BYTES)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, Image.DecompressionBombError):
        logger.warning("Soul ID %s: the thumbnail's crop is unreadable", character.pk)
        return
    storage.write(key, data, content_type="image/jpeg")
    character.thumbnail_key = key
    character.thumbnail_width, character.thumbnail_height, character.thumbnail_bytes = (
        width,
        height,
        len(data),
    )


class TrainingJobs(JobKind):
    job_type = contract.JOB_TYPE_TRAINING
    job_id_field = "character_id"

    # 1. Rows and timing

    def lock(self, job_id: str, *, attempt: int | None = None) -> Job | None:
        character = Character.objects.select_for_update().filter(pk=job_id).first()
        if character is None:
            return None
        runs = TrainingRun.objects.select_for_update().filter(character=character).order_by("-attempt")
        run = runs.first()
        if run is None or (attempt is not None and run.attempt != attempt):
            return None
        return self.job(character, run)

    @staticmethod
    def job(character: Character, run: TrainingRun) -> Job:
        running = run.started_at is not None
        return Job(
            job_id=str(character.pk),
            attempt=run.attempt,
            last_sequence=run.last_event_sequence,
            running=running,
            finished=run.status != TrainingStatus.RUNNING or character.status == CharacterStatus.DELETING,
            since=(run.last_event_at or run.started_at) if running else run.created_at,
            hold_owner=run,
            row=(character, run),
        )

    def stuck_after(self) -> dt.timedelta:
        return dt.timedelta(seconds=settings.CHARACTERS_TRAINING_STUCK_AFTER_SECONDS)

    def max_wait(self) -> dt.timedelta:
        return dt.timedelta(seconds=settings.CHARACTERS_TRAINING_QUEUE_MAX_WAIT_SECONDS)

    def candidates(self, *, stuck_before, queued_before):
        silent = Q(started_at__isnull=False, last_event_at__lt=stuck_before)
        waiting = Q(started_at__isnull=True, created_at__lt=queued_before)
        return TrainingRun.objects.filter(silent | waiting, status=TrainingStatus.RUNNING)

    def unsent(self, *, queued_before):
        waiting = Q(started_at__isnull=True, created_at__lt=queued_before)
        return TrainingRun.objects.filter(waiting, status=TrainingStatus.RUNNING, job_message_id="")

    # 2. Messages

    def message_fields(self, job_id: str, attempt: int, *, row: Any = None) -> dict[str, Any] | None:
        run = TrainingRun.objects.filter(
            character_id=job_id, attempt=attempt, status=TrainingStatus.RUNNING
        ).first()
        if run is None or not run.job:
            return None
        return contract.training_message_fields(contract.TrainingJob.from_message(run.job))

    def sent(self, job_id: str, attempt: int, message_id: str) -> None:
        TrainingRun.objects.filter(character_id=job_id, attempt=attempt).update(job_message_id=message_id)

    # 3. Transitions (the rows are locked)

    def seen(self, job: Job, event: contract.JobEvent) -> None:
        run: TrainingRun = job.row[1]
        now = timezone.now()
        run.last_event_sequence = job.last_sequence = event.sequence
        run.last_event_at = now
        run.started_at = run.started_at or now
        run.save(update_fields=["last_event_sequence", "last_event_at", "started_at", "updated_at"])

    def progress(self, job: Job, event: contract.JobEvent) -> None:
        character: Character = job.row[0]
        character.training_progress = event.progress
        if event.total_steps:
            character.training_step, character.training_total = event.step, event.total_steps
        character.training_eta_seconds = round(event.eta_seconds) if event.eta_seconds is not None else None
        character_changed(character)

    def outputs_valid(self, job: Job, event: contract.JobEvent) -> bool:
        lora = (event.outputs or {}).get("lora")
        character: Character = job.row[0]
        return isinstance(lora, dict) and str(lora.get("key") or "").startswith(character.prefix)

    def succeed(self, job: Job, event: contract.JobEvent, *, charged: bool) -> None:
        character, run = job.row
        outputs = event.outputs
        lora = outputs["lora"]
        previous = character.lora_key
        if previous and previous != lora["key"]:  # the LoRA this training replaces: its whole folder
            folder = previous.rsplit("/", 1)[0] + "/"
            if folder.startswith(f"{character.prefix}lora/"):
                transaction.on_commit(functools.partial(_delete_folder, folder))
        character.status = CharacterStatus.READY
        character.lora_key = lora["key"]
        character.lora_metadata = {
            "route": outputs.get("route"),
            "family": outputs.get("family"),
            "base_checkpoint": outputs.get("base_checkpoint"),
            "trigger": outputs.get("trigger"),
            "prompt": outputs.get("prompt"),
            "rank": outputs.get("rank"),
            "resolution": outputs.get("resolution"),
            "steps": outputs.get("steps"),
            "photos": outputs.get("photos"),
            "sha256": lora.get("sha256"),
            "bytes": lora.get("bytes"),
            "attempt": run.attempt,
        }
        character.training_progress = 1.0
        character.training_eta_seconds = None
        character.trained_at = timezone.now()
        _thumbnail(character)
        character_changed(character)
        webhook_event_emit_safely(  # an organization's Soul ID (none for an app user's)
            account_id=character.owner_id,
            event_type="character.ready",
            data={"id": str(character.pk), "object": "character", "status": character.status},
        )
        run.status = TrainingStatus.SUCCEEDED
        run.timings = event.timings
        run.finished_at = timezone.now()
        run.save()

    def end(self, job: Job, *, outcome: Outcome, code: str, message: str, retryable: bool) -> None:
        character, run = job.row
        run.status = TrainingStatus.CANCELED if outcome == Outcome.CANCELED else TrainingStatus.FAILED
        run.failure_code = code
        run.finished_at = timezone.now()
        run.save()
        if character.status == CharacterStatus.DELETING:  # stopped by its erasure: nothing to show
            return
        character.status = CharacterStatus.FAILED
        character.failure_message = message[:255]
        character.training_eta_seconds = None
        character_changed(character)

    def failure_message(self, code: str, worker_message: str = "") -> str:
        return worker_message or FAILED_MESSAGE

    def final(self, job: Job, event: contract.JobEvent) -> None:
        character: Character = job.row[0]
        key = str(((event.outputs or {}).get("lora") or {}).get("key") or "")
        if event.kind == "completed" and key.startswith(character.prefix) and key != character.lora_key:
            transaction.on_commit(functools.partial(_delete_keys, [key]))  # trained after an erasure, say

    def gone(self, event: contract.JobEvent) -> None:
        key = str(((event.outputs or {}).get("lora") or {}).get("key") or "")
        if event.kind == "completed" and key.startswith("characters/"):  # trained after an erasure
            transaction.on_commit(functools.partial(_delete_keys, [key]))

    def notify(self, job: Job, *, succeeded: bool) -> None:
        character, run = job.row
        push_notify_character_finished(
            user=character.owner,
            character_id=character.pk,
            ready=succeeded,
            character_name=character.name,
            reason=None if succeeded else PUSH_REASONS.get(run.failure_code, "INTERNAL"),
        )


TRAINING_JOBS = register(TrainingJobs())
