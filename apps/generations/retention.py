"""The retention purge of generations (daily, from the scheduler: `generations_purge_task`).

- Inputs: a selfie upload is deleted (its file, its row) `GENERATIONS_INPUT_RETENTION_DAYS` (30) after the
  last generation that used it was made, once none of them is still going; an upload no generation or Soul
  ID uses is deleted the same time after it was made. The generations keep their videos; a draft whose
  selfie is gone cannot be finalized (`inputs_purged_at`).
- Outputs: with `GENERATIONS_OUTPUT_RETENTION_DAYS` above 0, a finished generation is deleted that long
  after it finished, as if its owner had deleted it (`generation_delete`). 0, the default: kept until the
  user deletes them.

Each deletion leaves a RetentionRecord (what, whose, which keys). Idempotent: what is gone is not found
again, so a second run in the same slot changes nothing. Deleting an account erases everything at once
(apps/accounts/erasure.py), whatever these terms.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.storage.backends import get_storage
from apps.storage.models import Upload

from .lifecycle import generation_delete
from .models import TERMINAL_STATUSES, Generation, GenerationStatus, RetentionKind, RetentionRecord

logger = logging.getLogger(__name__)


def generations_purge_inputs(*, now: dt.datetime | None = None) -> list[RetentionRecord]:
    """Deletes the selfie uploads past GENERATIONS_INPUT_RETENTION_DAYS (see the module docstring)."""
    days = settings.GENERATIONS_INPUT_RETENTION_DAYS
    if days <= 0:
        return []
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    last_used = Upload.objects.annotate(last_used=Max("generations__created_at"))
    used_long_ago = last_used.filter(last_used__lt=cutoff).exclude(generations__status__in=_active_statuses())
    never_used = last_used.filter(last_used__isnull=True, character_photo__isnull=True, created_at__lt=cutoff)
    ids = list(used_long_ago.values_list("pk", flat=True)) + list(never_used.values_list("pk", flat=True))
    records = []
    for upload_id in dict.fromkeys(ids):
        record = _purge_upload(upload_id=upload_id, cutoff=cutoff, term_days=days)
        if record is not None:
            records.append(record)
    return records


def _active_statuses() -> list[str]:
    return [status for status in GenerationStatus.values if status not in TERMINAL_STATUSES]


def _purge_upload(*, upload_id, cutoff: dt.datetime, term_days: int) -> RetentionRecord | None:
    with transaction.atomic():
        upload = Upload.objects.select_for_update().filter(pk=upload_id).first()
        if upload is None:
            return None
        generations = Generation.objects.select_for_update().filter(photo_upload=upload)
        # Checked again under the locks: a generation made or started with it since the query keeps it.
        if any(g.created_at >= cutoff or g.status not in TERMINAL_STATUSES for g in generations):
            return None
        if not generations and (upload.created_at >= cutoff or hasattr(upload, "character_photo")):
            return None
        generation_ids = [g.pk for g in generations]
        keys = [upload.key, upload.incoming_key]
        Generation.objects.filter(pk__in=generation_ids).update(
            image_key="", photo_upload=None, inputs_purged_at=timezone.now()
        )
        upload.delete()
        record = RetentionRecord.objects.create(
            kind=RetentionKind.INPUT,
            user_ref=upload.user_id,
            upload_ref=upload_id,
            generation_refs=[str(pk) for pk in generation_ids],
            keys=keys,
            term_days=term_days,
        )

        def delete_files() -> None:
            storage = get_storage()
            for key in keys:
                try:
                    storage.delete(key)
                except Exception:  # the row is gone; the account erasure's prefix sweep finds what is left
                    logger.exception("retention purge could not delete %s", key)

        transaction.on_commit(delete_files)
    return record


def generations_purge_outputs(*, now: dt.datetime | None = None) -> list[RetentionRecord]:
    """Deletes the generations finished more than GENERATIONS_OUTPUT_RETENTION_DAYS ago (0: never)."""
    days = settings.GENERATIONS_OUTPUT_RETENTION_DAYS
    if days <= 0:
        return []
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    expired = Generation.objects.filter(
        deleted_at__isnull=True, status__in=TERMINAL_STATUSES, finished_at__lt=cutoff
    ).select_related("owner")
    records = []
    for generation in expired:
        keys = [key for key in (generation.video_key, generation.poster_key) if key]
        with transaction.atomic():
            generation_delete(user=generation.owner, generation_id=generation.pk)
            records.append(
                RetentionRecord.objects.create(
                    kind=RetentionKind.OUTPUT,
                    user_ref=generation.owner_id,
                    generation_refs=[str(generation.pk)],
                    keys=keys,
                    term_days=days,
                )
            )
    return records


def generations_purge_expired(*, now: dt.datetime | None = None) -> list[RetentionRecord]:
    """Both purges (the daily job's body)."""
    return generations_purge_inputs(now=now) + generations_purge_outputs(now=now)
