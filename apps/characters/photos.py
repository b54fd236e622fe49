"""Soul ID creation and photos: consent, adding photos, each photo's check on a backend worker, removal.

A photo is checked on a backend worker (`character_photo_check`, the actor in tasks.py): its clean copy
and face crop are stored under the Soul ID's prefix, its verdict recorded, the set rules (duplicates, how
many are usable) re-applied, and the original upload deleted.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from apps.core.actors import actor_send
from apps.core.errors import ConsentRequired, NotFound, TooManyPhotos, UploadInvalid, ValidationFailed
from apps.storage.backends import ObjectNotFound, ObjectTooLarge, StorageError, get_storage
from apps.storage.models import RejectReason, Upload, UploadStatus
from apps.storage.selectors import upload_get_for_user
from apps.storage.services import IssuedUpload, upload_verify, uploads_request
from gpu_worker.contract import TRAINING_MAX_PHOTOS, TRAINING_MIN_PHOTOS

from .consent import SIGNATURE_METHOD, consent_text
from .events import character_changed
from .models import Character, CharacterPhoto, CharacterStatus, ConsentRecord, PhotoStatus
from .photo_checks import PhotoRules, PhotoVerdict, Reason, check_photo, check_photo_set
from .selectors import character_get_for_user

logger = logging.getLogger(__name__)

PHOTO_CHECK_ACTOR = "character_photo_check_task"  # tasks.py
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


def check_stored_photo(key: str, *, rules: PhotoRules) -> PhotoVerdict:
    """The verdict on the photo stored under `key` (a Soul ID photo's upload, a generation's selfie): read
    at most `rules.max_bytes` and check it. A larger object is TOO_LARGE, a missing one UNREADABLE, and so
    is a file that breaks a decoder: the file's fault, not a server error (logged), and never left pending."""
    try:
        data = get_storage().read(key, max_bytes=rules.max_bytes)
    except ObjectTooLarge:
        return PhotoVerdict(accepted=False, reasons=[Reason.TOO_LARGE])
    except ObjectNotFound:
        return PhotoVerdict(accepted=False, reasons=[Reason.UNREADABLE])
    try:
        return check_photo(data, rules=rules)
    except Exception:
        logger.exception("checking the photo stored under %s failed; refused as unreadable", key)
        return PhotoVerdict(accepted=False, reasons=[Reason.UNREADABLE])


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


def character_uploads_request(*, user, character_id, count: int, content_type: str) -> list[IssuedUpload]:
    """Upload targets for photos of a Soul ID: it must be the caller's (NotFound otherwise) with a stored,
    not withdrawn biometric consent record (ConsentRequired otherwise): nothing is issued before that."""
    character = character_get_for_user(user=user, character_id=character_id)
    if not ConsentRecord.objects.filter(character=character, user=user, withdrawn_at__isnull=True).exists():
        raise ConsentRequired(
            "Agree to the use of your photos for this Soul ID before uploading them.", field="characterId"
        )
    return uploads_request(user=user, count=count, content_type=content_type)


# --- Photos -----------------------------------------------------------------------------------------


# An upload refused by the storage checks becomes that photo's verdict, in the checks' own words.
_UPLOAD_REASONS = {
    RejectReason.TOO_MANY_PIXELS: Reason.TOO_LARGE,
    RejectReason.TYPE_MISMATCH: Reason.UNSUPPORTED_FORMAT,
    RejectReason.ANIMATED: Reason.UNSUPPORTED_FORMAT,
}


def _photo_reason(upload_reason: str | None) -> Reason:
    """A selfie refused by the photo checks keeps its reason (NO_FACE, ...; same names); a file that is
    not an image, empty, damaged, expired or never sent is UNREADABLE."""
    if upload_reason in _UPLOAD_REASONS:
        return _UPLOAD_REASONS[upload_reason]
    try:
        return Reason(upload_reason)
    except ValueError:
        return Reason.UNREADABLE


def _position(index: int) -> str:
    return f"The upload at position {index + 1} of uploadIds"


def _verified_uploads(*, user, upload_ids: list[str]) -> list[Upload | Reason]:
    """For each id, in order, the user's upload verified now if it was not yet, or the reason it was
    refused: one bad file is that photo's verdict, never the whole call's. An id that is not the user's
    upload is NotFound, naming its position."""
    results: list[Upload | Reason] = []
    for index, upload_id in enumerate(upload_ids):
        try:
            upload = upload_get_for_user(user=user, upload_id=upload_id)
        except NotFound:
            raise NotFound(f"{_position(index)} does not exist.", field="uploadIds") from None
        try:
            if upload.status != UploadStatus.VERIFIED:
                upload = upload_verify(user=user, upload_id=upload.pk)
        except UploadInvalid as refused:
            results.append(_photo_reason(refused.extra.get("reason")))
            continue
        results.append(upload)
    return results


def character_add_photos(*, user, character_id, upload_ids: list[str]) -> Character:
    """Adds uploaded photos to a Soul ID, each with its own verdict (characterUpdated tells): a file that
    the upload checks refused is added REJECTED with its reason at once; the others are checked on a
    backend worker. The photos keep the order of `upload_ids` and name their upload (`upload_ref`)."""
    upload_ids = list(dict.fromkeys(str(upload_id) for upload_id in upload_ids))
    if not upload_ids:
        raise ValidationFailed("Choose at least one photo.", field="uploadIds")
    most = TRAINING_MAX_PHOTOS
    if len(upload_ids) > most:
        raise TooManyPhotos(maximum=most, count=len(upload_ids))
    character_get_for_user(user=user, character_id=character_id)  # NotFound before touching uploads
    # Verification records its verdict in its own transaction (a refused file stays refused).
    results = _verified_uploads(user=user, upload_ids=upload_ids)
    with transaction.atomic():
        character = character_get_for_user(user=user, character_id=character_id, for_update=True)
        if character.status not in EDITABLE:
            raise ValidationFailed("Photos cannot be changed while the Soul ID trains or once it is trained.")
        pks = [result.pk for result in results if isinstance(result, Upload)]
        locked = {u.pk: u for u in Upload.objects.select_for_update().filter(pk__in=pks, user=user)}
        added = set(CharacterPhoto.objects.filter(upload_id__in=pks).values_list("upload_id", flat=True))
        for index, result in enumerate(results):
            if not isinstance(result, Upload):
                continue
            upload = locked.get(result.pk)
            if upload is None or upload.status != UploadStatus.VERIFIED:  # deleted or used meanwhile
                raise NotFound(f"{_position(index)} does not exist.", field="uploadIds")
            if upload.pk in added:
                raise ValidationFailed(
                    f"{_position(index)} was already added to a Soul ID.", field="uploadIds"
                )
        counted = character.photos.filter(status__in=[PhotoStatus.PENDING, PhotoStatus.ACCEPTED]).count()
        if counted + len(pks) > most:
            raise TooManyPhotos(maximum=most, count=counted + len(pks))
        now = timezone.now()
        photos = []
        for upload_id, result in zip(upload_ids, results, strict=True):
            if isinstance(result, Upload):
                upload = locked[result.pk]
                photo = CharacterPhoto(character=character, upload=upload, upload_key=upload.key)
            else:  # refused by the upload checks: its verdict now, nothing stored to erase later
                photo = CharacterPhoto(
                    character=character, upload_key="", status=PhotoStatus.REJECTED, reasons=[result]
                )
                photo.checked_at = now
            photo.upload_ref = uuid.UUID(upload_id)
            photos.append(photo)
        photos = CharacterPhoto.objects.bulk_create(photos)
        character.last_used_at = timezone.now()
        _refresh_set(character)
        character_changed(character)
        photo_ids = [str(photo.pk) for photo in photos if photo.status == PhotoStatus.PENDING]

        def enqueue() -> None:
            for photo_id in photo_ids:
                actor_send(PHOTO_CHECK_ACTOR, photo_id)

        transaction.on_commit(enqueue)
    return character


@dataclass(frozen=True)
class _Checked:
    """A checked photo as `check_photo_set` reads it (its own verdict, before set rules)."""

    accepted: bool
    reasons: list[str]
    face_hash: str | None
    face_hash_mirrored: str | None


def _refresh_set(character: Character) -> None:
    """Applies the set rules (duplicates) to the checked photos and sets the status. The caller holds the
    character's row lock."""
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
    verdict = check_photo_set(items, min_photos=TRAINING_MIN_PHOTOS, max_photos=TRAINING_MAX_PHOTOS)
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
        return
    if len(checked) < len(photos):
        status = CharacterStatus.VALIDATING
    elif verdict.ready or not photos:
        status = CharacterStatus.COLLECTING
    else:
        status = CharacterStatus.NEEDS_PHOTOS
    character.status = status


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
    verdict = check_stored_photo(photo.upload_key, rules=photo_rules())
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
        _refresh_set(character)
        character_changed(character)
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
    _refresh_set(character)
    character_changed(character)
    return character
