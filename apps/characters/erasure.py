"""Erasing Soul IDs: a user's deletion, an account's deletion, and the retention purge of unused ones.

Deleting marks the Soul ID DELETING at once (it disappears from the API, a running training is stopped
and released) and records an ErasureRecord; one audited job on a backend worker (`character_erase`)
then removes every stored artifact and row. Retention counts from the last use (`character_mark_used`).
"""

from __future__ import annotations

import datetime as dt
import uuid

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

import gpu_worker.contract as contract
from apps.core.actors import actor_send
from apps.jobs.kinds import Outcome
from apps.jobs.lifecycle import job_finish
from apps.storage.backends import StorageError, get_storage
from apps.storage.models import Upload

from .events import character_changed
from .jobs import TRAINING_JOBS
from .models import (
    Character,
    CharacterPhoto,
    CharacterStatus,
    ConsentRecord,
    ErasureRecord,
    ErasureStatus,
    TrainingStatus,
)
from .selectors import character_get_for_user

ERASE_ACTOR = "character_erase_task"  # tasks.py


class Trigger:
    USER_REQUEST = "USER_REQUEST"
    ACCOUNT_DELETION = "ACCOUNT_DELETION"
    RETENTION = "RETENTION"


def _request_erasure(character: Character, *, trigger: str) -> ErasureRecord:
    """Marks a locked character DELETING and records the erasure to do (once: a repeat returns it)."""
    existing = ErasureRecord.objects.filter(
        character_ref=character.pk, status__in=[ErasureStatus.PENDING, ErasureStatus.FAILED]
    ).first()
    if existing is not None:
        return existing
    if character.status != CharacterStatus.DELETING:
        character.status = CharacterStatus.DELETING
        character_changed(character)
    run = character.training_runs.select_for_update().filter(status=TrainingStatus.RUNNING).first()
    if run is not None:  # a training cut short by an erasure is stopped and never charged
        job = TRAINING_JOBS.job(character, run)
        job_finish(TRAINING_JOBS, job, outcome=Outcome.CANCELED, code=contract.CANCELED)
    ConsentRecord.objects.filter(character=character, withdrawn_at__isnull=True).update(
        withdrawn_at=timezone.now()
    )
    return ErasureRecord.objects.create(
        user_ref=character.owner_id, character_ref=character.pk, trigger=trigger
    )


@transaction.atomic
def character_delete(*, user, character_id) -> uuid.UUID:
    """Deletes a Soul ID: it disappears from the API at once, and one audited job on a backend worker
    removes every stored artifact and row (`character_erase`)."""
    character = character_get_for_user(user=user, character_id=character_id, for_update=True)
    record = _request_erasure(character, trigger=Trigger.USER_REQUEST)
    record_id = str(record.pk)

    transaction.on_commit(lambda: actor_send(ERASE_ACTOR, record_id))
    return character.pk


def character_erase(*, erasure_id, job: str = "") -> ErasureRecord:
    """Removes everything stored for one Soul ID and records each result (idempotent; a failure is
    recorded, then raised so the job is retried). The ErasureRecord and the consent record remain."""
    record = ErasureRecord.objects.get(pk=erasure_id)
    if record.status == ErasureStatus.DONE:
        return record
    storage = get_storage()
    artifacts: list[dict] = []
    failed = False

    def remove(kind: str, key: str) -> None:
        nonlocal failed
        if not key:
            return
        try:
            removed = storage.delete(key)
        except Exception as exc:  # recorded per artifact; the job is retried
            failed = True
            artifacts.append({"kind": kind, "location": key, "result": "error", "error": type(exc).__name__})
            return
        artifacts.append(
            {"kind": kind, "location": key, "result": "removed" if removed else "absent", "removed": removed}
        )

    character = Character.objects.filter(pk=record.character_ref).first()
    photos = list(character.photos.select_related("upload")) if character is not None else []
    for photo in photos:
        remove("photo_original", photo.upload_key)
        if photo.upload is not None:
            remove("photo_incoming", photo.upload.incoming_key)
        remove("photo_clean", photo.clean_key)
        remove("face_crop", photo.crop_key)
    if character is not None:
        remove("lora_weights", character.lora_key)
        remove("thumbnail", character.thumbnail_key)
    prefix = f"characters/{record.user_ref}/{record.character_ref}/"
    try:
        swept = storage.delete_prefix(prefix)
        left = storage.list_keys(prefix)
    except Exception as exc:
        failed = True
        artifacts.append(
            {"kind": "prefix", "location": prefix, "result": "error", "error": type(exc).__name__}
        )
    else:
        failed = failed or bool(left)
        artifacts.append(
            {
                "kind": "prefix",
                "location": prefix,
                "result": "error" if left else "empty",
                "removed": swept,
                "left": len(left),
            }
        )
    if failed:
        record.status = ErasureStatus.FAILED
        record.artifacts = artifacts
        record.job = job
        record.save(update_fields=["status", "artifacts", "job", "updated_at"])
        raise StorageError(f"erasure {record.pk}: some artifacts could not be removed")
    with transaction.atomic():
        character = Character.objects.select_for_update().filter(pk=record.character_ref).first()
        if character is not None:
            upload_ids = [photo.upload_id for photo in character.photos.all() if photo.upload_id]
            uploads, _ = Upload.objects.filter(pk__in=upload_ids).delete()
            photos_removed, _ = CharacterPhoto.objects.filter(character=character).delete()
            character.delete()
            artifacts.append(
                {
                    "kind": "database",
                    "location": "characters",
                    "result": "removed",
                    "photos": photos_removed,
                    "uploads": uploads,
                    "character": 1,
                }
            )
        record.status = ErasureStatus.DONE
        record.artifacts = artifacts
        record.job = job
        record.finished_at = timezone.now()
        record.save(update_fields=["status", "artifacts", "job", "finished_at", "updated_at"])
    return record


def characters_erase_for_user(*, user, trigger: str = Trigger.ACCOUNT_DELETION) -> list[ErasureRecord]:
    """Erases every Soul ID of a user now, in this process (account deletion calls it before the user
    row goes). Raises if any artifact could not be removed, so the account is not deleted half-way."""
    records = []
    for character_id in Character.objects.filter(owner=user).values_list("pk", flat=True):
        with transaction.atomic():
            character = Character.objects.select_for_update().get(pk=character_id)
            record = _request_erasure(character, trigger=trigger)
        records.append(character_erase(erasure_id=record.pk, job="account-deletion"))
    return records


def character_mark_used(*, character_id) -> None:
    """Records that a Soul ID was used (a generation with it): retention counts from its last use."""
    Character.objects.filter(pk=character_id).update(last_used_at=timezone.now())


def characters_purge_expired(*, now=None) -> list[ErasureRecord]:
    """Erases every Soul ID unused for CHARACTERS_RETENTION_DAYS (the scheduled purge; `now` for tests and
    replays). Each one is erased like a deletion, with the trigger RETENTION."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=settings.CHARACTERS_RETENTION_DAYS)
    expired = (
        Character.objects.exclude(status=CharacterStatus.DELETING)
        .annotate(last_use=Coalesce("last_used_at", "created_at"))
        .filter(last_use__lt=cutoff)
        .values_list("pk", flat=True)
    )
    records = []
    for character_id in list(expired):
        with transaction.atomic():
            character = Character.objects.select_for_update().filter(pk=character_id).first()
            if character is None:
                continue
            record = _request_erasure(character, trigger=Trigger.RETENTION)
        records.append(character_erase(erasure_id=record.pk, job="retention-purge"))
    return records
