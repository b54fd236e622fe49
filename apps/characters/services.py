"""Soul ID writes: consent, photos and their checks, erasure.

Every change the API can see bumps `Character.sequence` under the row lock and publishes a hint to the
character's group after the commit (`character_group`); subscriptions re-read the database on it.
Photo checks and erasure run on a backend worker (tasks.py); their actors call `character_photo_check`
and `character_erase` here.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import logging
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import dramatiq
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from django.db.models.functions import Coalesce
from django.utils import timezone
from PIL import Image

import gpu_worker.contract as contract
from apps.core import events
from apps.core.errors import (
    ConsentRequired,
    NotEnoughPhotos,
    NotFound,
    TooManyPhotos,
    UnsupportedOption,
    UploadInvalid,
    ValidationFailed,
)
from apps.credits.services import credits_capture, credits_hold, credits_release
from apps.notifications.services import push_notify_character_finished
from apps.storage.backends import ObjectNotFound, ObjectTooLarge, StorageError, get_storage
from apps.storage.models import Upload, UploadStatus
from apps.storage.selectors import upload_get_for_user
from apps.storage.services import upload_verify

from .consent import SIGNATURE_METHOD, consent_text
from .models import (
    Character,
    CharacterPhoto,
    CharacterStatus,
    ConsentRecord,
    ErasureRecord,
    ErasureStatus,
    PhotoStatus,
    TrainingRun,
    TrainingStatus,
)
from .photo_checks import PhotoRules, PhotoVerdict, Reason, check_photo, check_photo_set
from .selectors import character_get_for_user

logger = logging.getLogger(__name__)

EVENT_KIND = "character"
NAME_MAX_CHARS = 60
# States in which photos may be added or removed. A READY Soul ID takes more photos to be trained again:
# it goes back to COLLECTING (or VALIDATING, NEEDS_PHOTOS) and its LoRA stays usable until a new one is
# READY (generations use `lora_key`, whatever the status).
EDITABLE = (
    CharacterStatus.COLLECTING,
    CharacterStatus.VALIDATING,
    CharacterStatus.NEEDS_PHOTOS,
    CharacterStatus.FAILED,
    CharacterStatus.READY,
)


class Trigger:
    USER_REQUEST = "USER_REQUEST"
    ACCOUNT_DELETION = "ACCOUNT_DELETION"
    RETENTION = "RETENTION"


def character_group(character_id) -> str:
    return f"character.{character_id}"


def _changed(character: Character, fields: Iterable[str] = ()) -> None:
    """Saves `fields` with a new sequence and tells subscribers after the commit."""
    character.sequence += 1
    character.save(update_fields=[*fields, "sequence", "updated_at"])
    events.publish_on_commit(
        character_group(character.pk), {"kind": EVENT_KIND, "sequence": character.sequence}
    )


def _delete_keys_on_commit(keys: Iterable[str]) -> None:
    keys = [key for key in keys if key]
    if not keys:
        return

    def delete() -> None:
        storage = get_storage()
        for key in keys:
            try:
                storage.delete(key)
            except StorageError:  # the erasure job sweeps the character's prefix in any case
                logger.exception("could not delete a Soul ID object")

    transaction.on_commit(delete)


def photo_rules() -> PhotoRules:
    return PhotoRules(max_bytes=settings.UPLOAD_MAX_BYTES, max_pixels=settings.UPLOAD_MAX_PIXELS)


# --- Create -----------------------------------------------------------------------------------------


@transaction.atomic
def character_create(
    *, user, name: str, consent: bool, ip_address: str = "", user_agent: str = ""
) -> Character:
    """A new Soul ID, with the consent record it is made under. Without consent nothing is stored."""
    if consent is not True:
        raise ConsentRequired(field="consent")
    name = (name or "").strip()
    if not name:
        raise ValidationFailed("Give your Soul ID a name.", field="name")
    if len(name) > NAME_MAX_CHARS:
        raise ValidationFailed(f"Keep the name to {NAME_MAX_CHARS} characters.", field="name")
    # One user's creations are serialised on their row, so the limit holds under concurrency.
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    most = settings.CHARACTERS_MAX_PER_USER
    if Character.objects.filter(owner=user).count() >= most:
        raise ValidationFailed(f"You can have at most {most} Soul IDs. Delete one to make a new one.")
    text = consent_text(settings.CHARACTERS_CONSENT_VERSION)
    character = Character(owner=user, name=name, last_used_at=timezone.now())
    character.full_clean()
    character.save()
    ConsentRecord.objects.create(
        user=user,
        character=character,
        character_ref=character.pk,
        text_version=text.version,
        text_sha256=text.sha256,
        purpose=text.purpose,
        retention_term=text.retention_term,
        signature_method=SIGNATURE_METHOD,
        ip_address=ip_address or None,
        user_agent=(user_agent or "")[:255],
    )
    return character


# --- Photos -----------------------------------------------------------------------------------------


def _verified_uploads(*, user, upload_ids: list[str]) -> list[Upload]:
    """The user's uploads, each verified now if it was not yet (a refused one raises UploadInvalid)."""
    uploads = []
    for upload_id in upload_ids:
        upload = upload_get_for_user(user=user, upload_id=upload_id)
        if upload.status != UploadStatus.VERIFIED:
            upload = upload_verify(user=user, upload_id=upload.pk)
        if not upload.content_type.startswith("image/"):
            raise UploadInvalid("Only photos can be added to a Soul ID.", field="uploadIds")
        uploads.append(upload)
    return uploads


def character_add_photos(*, user, character_id, upload_ids: list[str]) -> Character:
    """Adds uploaded photos to a Soul ID; each is checked on a backend worker (characterUpdated tells)."""
    upload_ids = list(dict.fromkeys(str(upload_id) for upload_id in upload_ids))
    if not upload_ids:
        raise ValidationFailed("Choose at least one photo.", field="uploadIds")
    most = settings.CHARACTERS_MAX_PHOTOS
    if len(upload_ids) > most:
        raise TooManyPhotos(maximum=most, count=len(upload_ids))
    character_get_for_user(user=user, character_id=character_id)  # NotFound before touching uploads
    # Verification records its verdict in its own transaction (a refused file stays refused).
    uploads = _verified_uploads(user=user, upload_ids=upload_ids)
    with transaction.atomic():
        character = character_get_for_user(user=user, character_id=character_id, for_update=True)
        if character.status not in EDITABLE:
            raise ValidationFailed("Photos cannot be changed while the Soul ID trains or once it is trained.")
        pks = [upload.pk for upload in uploads]
        locked = {u.pk: u for u in Upload.objects.select_for_update().filter(pk__in=pks, user=user)}
        if len(locked) != len(pks) or any(u.status != UploadStatus.VERIFIED for u in locked.values()):
            raise NotFound("This upload does not exist.", field="uploadIds")
        if CharacterPhoto.objects.filter(upload_id__in=pks).exists():
            raise ValidationFailed("A photo was already added to a Soul ID.", field="uploadIds")
        counted = character.photos.filter(status__in=[PhotoStatus.PENDING, PhotoStatus.ACCEPTED]).count()
        if counted + len(pks) > most:
            raise TooManyPhotos(maximum=most, count=counted + len(pks))
        photos = CharacterPhoto.objects.bulk_create(
            [CharacterPhoto(character=character, upload=locked[pk], upload_key=locked[pk].key) for pk in pks]
        )
        character.status = CharacterStatus.VALIDATING
        character.last_used_at = timezone.now()
        _changed(character, ["status", "last_used_at"])
        photo_ids = [str(photo.pk) for photo in photos]

        def enqueue() -> None:
            from .tasks import character_photo_check_task

            for photo_id in photo_ids:
                character_photo_check_task.send(photo_id)

        transaction.on_commit(enqueue)
    return character


@dataclass(frozen=True)
class _Checked:
    """A checked photo as `check_photo_set` reads it (its own verdict, before set rules)."""

    accepted: bool
    reasons: list[str]
    face_hash: str | None
    face_hash_mirrored: str | None


def _refresh_set(character: Character) -> list[str]:
    """Applies the set rules (duplicates) to the checked photos and sets the status. Returns the fields
    of `character` that changed. The caller holds the character's row lock."""
    photos = list(character.photos.all())
    checked = [photo for photo in photos if photo.status != PhotoStatus.PENDING]
    items = [
        _Checked(
            accepted=photo.status in (PhotoStatus.ACCEPTED, PhotoStatus.DUPLICATE),
            reasons=[r for r in photo.reasons if r != Reason.DUPLICATE],
            face_hash=photo.face_hash or None,
            face_hash_mirrored=photo.face_hash_mirrored or None,
        )
        for photo in checked
    ]
    verdict = check_photo_set(
        items, min_photos=settings.CHARACTERS_MIN_PHOTOS, max_photos=settings.CHARACTERS_MAX_PHOTOS
    )
    for index, (photo, item) in enumerate(zip(checked, items, strict=True)):
        if not item.accepted:
            continue
        kept = verdict.duplicates.get(index)
        status = PhotoStatus.DUPLICATE if kept is not None else PhotoStatus.ACCEPTED
        duplicate_of = checked[kept].pk if kept is not None else None
        if photo.status != status or photo.duplicate_of_id != duplicate_of:
            photo.status = status
            photo.reasons = verdict.photo_reasons[index]
            photo.duplicate_of_id = duplicate_of
            photo.save(update_fields=["status", "reasons", "duplicate_of", "updated_at"])
    if character.status not in EDITABLE:
        return []
    if len(checked) < len(photos):
        status = CharacterStatus.VALIDATING
    elif verdict.ready or not photos:
        status = CharacterStatus.COLLECTING
    else:
        status = CharacterStatus.NEEDS_PHOTOS
    if status == character.status:
        return []
    character.status = status
    return ["status"]


def _measurements(verdict: PhotoVerdict) -> dict:
    def box(value) -> list[int] | None:
        return [value.x, value.y, value.width, value.height] if value is not None else None

    return {
        "format": verdict.format,
        "width": verdict.width,
        "height": verdict.height,
        "face_count": verdict.face_count,
        "face_box": box(verdict.face_box),
        "crop_box": box(verdict.crop_box),
        "face_fraction": verdict.face_fraction,
        "sharpness": verdict.sharpness,
        "brightness": verdict.brightness,
        "clipped": verdict.clipped,
    }


def character_photo_check(*, photo_id) -> str:
    """Checks one pending photo (the actor's body): stores the clean photo and the face crop under the
    character's prefix, records the verdict, re-applies the set rules, deletes the original upload.

    Idempotent: a photo that is gone (removed, erased) or already checked is left alone. Returns what
    happened, for logs."""
    photo = CharacterPhoto.objects.select_related("character").filter(pk=photo_id).first()
    if photo is None or photo.status != PhotoStatus.PENDING:
        return "skipped"
    storage = get_storage()
    rules = photo_rules()
    try:
        data = storage.read(photo.upload_key, max_bytes=rules.max_bytes)
    except ObjectTooLarge:
        verdict = PhotoVerdict(accepted=False, reasons=[Reason.TOO_LARGE])
    except ObjectNotFound:
        verdict = PhotoVerdict(accepted=False, reasons=[Reason.UNREADABLE])
    else:
        try:
            verdict = check_photo(data, rules=rules)
        except Exception:  # a file that breaks a decoder must not leave the photo pending for ever
            logger.exception("checking Soul ID photo %s failed; rejected as unreadable", photo_id)
            verdict = PhotoVerdict(accepted=False, reasons=[Reason.UNREADABLE])
    with transaction.atomic():
        # Under the character's row lock: a deletion requested meanwhile has marked it DELETING (nothing
        # is written then), and an erasure waits until these outputs are recorded on the photo.
        character = Character.objects.select_for_update().filter(pk=photo.character_id).first()
        photo = CharacterPhoto.objects.select_for_update().filter(pk=photo_id).first()
        if (
            character is None
            or character.status == CharacterStatus.DELETING
            or photo is None
            or photo.status != PhotoStatus.PENDING
        ):
            return "gone"
        clean_key = crop_key = ""
        if verdict.accepted:
            clean_key = f"{character.prefix}photos/{photo.pk}/clean.jpg"
            crop_key = f"{character.prefix}photos/{photo.pk}/crop.jpg"
            # Written inside the transaction: if it rolls back, the objects lie under the character's
            # prefix, which a retry overwrites and an erasure sweeps.
            storage.write(clean_key, verdict.clean_jpeg, content_type="image/jpeg")
            storage.write(crop_key, verdict.face_crop_jpeg, content_type="image/jpeg")
        photo.status = PhotoStatus.ACCEPTED if verdict.accepted else PhotoStatus.REJECTED
        photo.reasons = list(verdict.reasons)
        photo.clean_key, photo.crop_key = clean_key, crop_key
        photo.face_hash = verdict.face_hash or ""
        photo.face_hash_mirrored = verdict.face_hash_mirrored or ""
        photo.measurements = _measurements(verdict)
        photo.checked_at = timezone.now()
        upload_id = photo.upload_id
        photo.upload = None
        photo.save()
        # The original may carry GPS and other metadata: only the clean copy is kept.
        Upload.objects.filter(pk=upload_id).delete()
        _delete_keys_on_commit([photo.upload_key])
        _changed(character, _refresh_set(character))
    return "accepted" if verdict.accepted else "rejected"


@transaction.atomic
def character_remove_photo(*, user, character_id, photo_id) -> Character:
    character = character_get_for_user(user=user, character_id=character_id, for_update=True)
    if character.status not in EDITABLE:
        raise ValidationFailed("Photos cannot be changed while the Soul ID trains or once it is trained.")
    try:
        pk = uuid.UUID(str(photo_id))
    except ValueError:
        raise NotFound("This photo does not exist.", field="photoId") from None
    photo = character.photos.filter(pk=pk).first()
    if photo is None:
        raise NotFound("This photo does not exist.", field="photoId")
    if photo.upload_id is not None:
        Upload.objects.filter(pk=photo.upload_id).delete()
    _delete_keys_on_commit([photo.upload_key, photo.clean_key, photo.crop_key])
    photo.delete()
    character.last_used_at = timezone.now()
    _changed(character, ["last_used_at", *_refresh_set(character)])
    return character


# --- Training ---------------------------------------------------------------------------------------


def _training_route():
    from apps.generations.models import ModelRoute

    route = ModelRoute.objects.filter(name=settings.CHARACTERS_TRAINING_ROUTE, enabled=True).first()
    if route is None or not route.lora_support or route.family not in contract.TRAINABLE_FAMILIES:
        raise UnsupportedOption("Soul ID training is not available right now. Try again later.")
    return route


def _cancel_training(job_id: str) -> None:
    client = getattr(dramatiq.get_broker(), "client", None)
    if client is not None:
        client.set(contract.cancel_key(job_id), "1", ex=contract.CANCEL_FLAG_TTL_SECONDS)
    else:
        cache.set(contract.cancel_key(job_id), True, contract.CANCEL_FLAG_TTL_SECONDS)


def _send_training(job: contract.TrainingJob) -> None:
    """Queues a training on the GPU training lane (after the commit), clearing an old cancel flag."""
    broker = dramatiq.get_broker()
    client = getattr(broker, "client", None)
    if client is not None:
        client.delete(contract.cancel_key(job.job_id))
    else:
        cache.delete(contract.cancel_key(job.job_id))
    fields = contract.training_message_fields(job)
    broker.declare_queue(fields["queue_name"])
    broker.enqueue(dramatiq.Message(**fields))
    logger.info("training job %s attempt %s queued", job.job_id, job.attempt)


@transaction.atomic
def character_train(*, user, character_id) -> Character:
    """Starts training a Soul ID on its distinct accepted photos: holds the price, queues a TrainingJob.
    Progress, READY or FAILED come back as job events (`character_training_event_apply`)."""
    character = character_get_for_user(user=user, character_id=character_id, for_update=True)
    if character.status == CharacterStatus.TRAINING:
        raise ValidationFailed("This Soul ID is already training.")
    if character.status == CharacterStatus.READY:
        raise ValidationFailed("This Soul ID is already trained. Add photos to train it again.")
    if character.status not in EDITABLE:
        raise ValidationFailed("This Soul ID cannot be trained now.")
    photos = list(character.photos.all())
    if any(photo.status == PhotoStatus.PENDING for photo in photos):
        raise ValidationFailed("Some photos are still being checked. Train once they are.")
    usable = [photo for photo in photos if photo.status == PhotoStatus.ACCEPTED]
    least, most = settings.CHARACTERS_MIN_PHOTOS, settings.CHARACTERS_MAX_PHOTOS
    if len(usable) < least:
        raise NotEnoughPhotos(required=least, accepted=len(usable))
    if len(usable) > most:
        raise TooManyPhotos(maximum=most, count=len(usable))
    route = _training_route()
    attempt = character.training_runs.count() + 1
    run = TrainingRun.objects.create(
        character=character,
        attempt=attempt,
        route=route.name,
        credits=settings.CHARACTERS_TRAINING_CREDITS,
        photo_count=len(usable),
    )
    credits_hold(user=user, amount=run.credits, owner=run, reason="Soul ID training")
    job = contract.TrainingJob(
        job_id=str(character.pk),
        route=route.spec(),
        photo_keys=tuple(photo.crop_key for photo in usable),
        output_prefix=f"{character.prefix}lora/{attempt}",
        seed=secrets.randbelow(contract.MAX_SEED + 1),
        attempt=attempt,
        **contract.training_defaults(route.family),
    )
    character.status = CharacterStatus.TRAINING
    character.training_step = 0
    character.training_total = job.steps
    character.training_progress = 0.0
    character.training_eta_seconds = None
    character.failure_message = ""
    character.last_used_at = timezone.now()
    _changed(
        character,
        [
            "status",
            "training_step",
            "training_total",
            "training_progress",
            "training_eta_seconds",
            "failure_message",
            "last_used_at",
        ],
    )
    transaction.on_commit(lambda: _send_training(job))
    return character


def _thumbnail(character: Character, storage) -> list[str]:
    """The first distinct accepted photo's face crop, copied as the Soul ID's thumbnail (a JPEG, no
    metadata: the crops are made that way). Returns the fields of `character` that changed."""
    photo = character.photos.filter(status=PhotoStatus.ACCEPTED).first()
    if photo is None or not photo.crop_key:
        return []
    key = f"{character.prefix}thumbnail.jpg"
    data = storage.read(photo.crop_key, max_bytes=settings.UPLOAD_MAX_BYTES)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, Image.DecompressionBombError):
        logger.warning("Soul ID %s: the thumbnail's crop is unreadable", character.pk)
        return []
    storage.write(key, data, content_type="image/jpeg")
    character.thumbnail_key = key
    character.thumbnail_width, character.thumbnail_height, character.thumbnail_bytes = (
        width,
        height,
        len(data),
    )
    return ["thumbnail_key", "thumbnail_width", "thumbnail_height", "thumbnail_bytes"]


def _delete_lora_on_commit(character: Character, lora_key: str) -> None:
    """Erases a LoRA a new training replaced: its training's folder, every object version (the
    erasure job sweeps the character's prefix in any case)."""
    folder = lora_key.rsplit("/", 1)[0] + "/"
    if not folder.startswith(f"{character.prefix}lora/"):
        logger.error("Soul ID %s: a LoRA outside its lora/ folder is not deleted", character.pk)
        return

    def delete() -> None:
        try:
            get_storage().delete_prefix(folder)
        except StorageError:
            logger.exception("could not delete a replaced Soul ID LoRA")

    transaction.on_commit(delete)


# Training failure codes -> the reasons a push can name (apps/notifications/messages.py).
_PUSH_REASONS = {"BAD_INPUT": "BAD_INPUT", "TIMED_OUT": "TIMED_OUT"}


def character_training_event_apply(*, message: dict) -> str:
    """One event of a training job (idempotent: a repeated, stale or reordered event changes nothing).
    Returns what happened, for logs. A message that breaks the contract raises ContractError."""
    event = contract.JobEvent.from_message(message)
    if event.job_type != contract.JOB_TYPE_TRAINING:
        raise contract.ContractError(f"not a training event: {event.job_type!r}")
    storage = get_storage()
    push: tuple | None = None
    with transaction.atomic():
        character = Character.objects.select_for_update().filter(pk=event.job_id).first()
        run = (
            TrainingRun.objects.select_for_update()
            .filter(character_id=event.job_id, attempt=event.attempt)
            .first()
            if character is not None
            else None
        )
        if character is None or run is None or character.status == CharacterStatus.DELETING:
            if event.kind == "completed":  # trained after an erasure: its weights go too
                key = (event.outputs.get("lora") or {}).get("key")
                if key and key.startswith("characters/"):
                    storage.delete(key)
            return "gone"
        if run.status != TrainingStatus.RUNNING:
            return "finished"
        if event.sequence <= run.last_event_sequence:
            return "stale"
        run.last_event_sequence = event.sequence
        fields = ["training_step", "training_total", "training_progress", "training_eta_seconds"]
        character.training_progress = event.progress
        if event.total_steps:
            character.training_step, character.training_total = event.step, event.total_steps
        character.training_eta_seconds = round(event.eta_seconds) if event.eta_seconds is not None else None
        if event.kind == "completed":
            outputs = event.outputs
            lora = outputs["lora"]
            if not str(lora["key"]).startswith(character.prefix):
                raise contract.ContractError("the LoRA must be stored under the character's prefix")
            character.status = CharacterStatus.READY
            previous = character.lora_key
            if previous and previous != lora["key"]:
                _delete_lora_on_commit(character, previous)
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
            fields += ["status", "lora_key", "lora_metadata", "trained_at", *_thumbnail(character, storage)]
            run.status = TrainingStatus.SUCCEEDED
            run.timings = event.timings
            run.finished_at = timezone.now()
            credits_capture(owner=run)
            push = (True, None)
        elif event.kind == "failed":
            character.status = CharacterStatus.FAILED
            character.failure_message = (event.message or "Training did not work. Try again.")[:255]
            character.training_eta_seconds = None
            fields += ["status", "failure_message"]
            run.status = TrainingStatus.CANCELED if event.reason_code == "CANCELED" else TrainingStatus.FAILED
            run.failure_code = event.reason_code or ""
            run.finished_at = timezone.now()
            credits_release(owner=run)
            push = (False, _PUSH_REASONS.get(event.reason_code or "", "INTERNAL"))
        run.save()
        _changed(character, fields)
        if push is not None and run.status != TrainingStatus.CANCELED:
            owner = get_user_model().objects.get(pk=character.owner_id)
            push_notify_character_finished(
                user=owner,
                character_id=character.pk,
                ready=push[0],
                character_name=character.name,
                reason=push[1],
            )
    return event.kind


# --- Erasure ----------------------------------------------------------------------------------------


def _request_erasure(character: Character, *, trigger: str) -> ErasureRecord:
    """Marks a locked character DELETING and records the erasure to do (once: a repeat returns it)."""
    existing = ErasureRecord.objects.filter(
        character_ref=character.pk, status__in=[ErasureStatus.PENDING, ErasureStatus.FAILED]
    ).first()
    if existing is not None:
        return existing
    if character.status != CharacterStatus.DELETING:
        character.status = CharacterStatus.DELETING
        _changed(character, ["status"])
    for run in character.training_runs.filter(status=TrainingStatus.RUNNING):
        run.status = TrainingStatus.CANCELED
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "finished_at", "updated_at"])
        credits_release(owner=run)  # a training cut short by an erasure is never charged
        transaction.on_commit(functools.partial(_cancel_training, str(character.pk)))
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

    def enqueue() -> None:
        from .tasks import character_erase_task

        character_erase_task.send(record_id)

    transaction.on_commit(enqueue)
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
