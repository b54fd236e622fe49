"""Upload writes: issue upload targets, then check what arrived before anything uses it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from apps.core.errors import RateLimited, UploadInvalid, ValidationFailed
from apps.core.outbound import OutboundRefused, fetch

from .backends import ObjectNotFound, ObjectTooLarge, Storage, UploadTarget, get_storage
from .images import ALLOWED_CONTENT_TYPES, CONTENT_TYPES, ImageRejected, inspect_image, sniff
from .models import RejectReason, Upload, UploadStatus
from .selectors import upload_get_for_user


@dataclass(frozen=True)
class IssuedUpload:
    upload: Upload
    target: UploadTarget


def _size_text(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.0f} MB"
    return f"{max(size // 1024, 1)} KB"


def _issuance_allow(*, user, count: int) -> None:
    """Counts issued upload targets per user in a fixed window (in Redis in services mode)."""
    window = settings.UPLOAD_ISSUE_WINDOW_SECONDS
    limit = settings.UPLOAD_ISSUE_MAX_PER_WINDOW
    now = int(time.time())
    key = f"throttle:uploads:{user.id}:{now // window}"
    cache.add(key, 0, timeout=window + 60)
    try:
        issued = cache.incr(key, count)
    except ValueError:  # the key expired between add and incr
        cache.add(key, count, timeout=window + 60)
        issued = count
    if issued > limit:
        cache.decr(key, count)
        retry_after = window - now % window
        raise RateLimited(
            retry_after_seconds=retry_after,
            message=f"You asked for too many uploads. Try again in {math.ceil(retry_after / 60)} minutes.",
        )


def uploads_request(*, user, count: int, content_type: str) -> list[IssuedUpload]:
    """Creates `count` pending uploads with server-chosen keys and a presigned target for each. Photos for
    a Soul ID are asked through apps.characters (`character_uploads_request`), which checks consent first."""
    most = settings.UPLOADS_PER_REQUEST_MAX
    if not 1 <= count <= most:
        raise ValidationFailed(f"Ask for 1 to {most} uploads at a time.", field="count")
    content_type = (content_type or "").strip().lower()
    if content_type not in ALLOWED_CONTENT_TYPES:
        raise ValidationFailed(
            "Upload JPEG, PNG, HEIC or WebP photos: contentType must be image/jpeg, image/png, "
            "image/heic or image/webp.",
            field="contentType",
        )
    _issuance_allow(user=user, count=count)

    storage = get_storage()
    issued = []
    for _ in range(count):
        upload = Upload(user=user, content_type=content_type, max_bytes=settings.UPLOAD_MAX_BYTES)
        upload.key = f"uploads/{user.id}/{upload.id}"
        upload.incoming_key = f"incoming/{user.id}/{upload.id}"
        target = storage.presign_upload(
            key=upload.incoming_key,
            content_type=content_type,
            max_bytes=upload.max_bytes,
            expires_in=settings.UPLOAD_URL_TTL_SECONDS,
        )
        upload.expires_at = target.expires_at
        upload.full_clean(validate_unique=False, validate_constraints=False)  # keys are fresh UUIDs
        issued.append(IssuedUpload(upload=upload, target=target))
    with transaction.atomic():
        Upload.objects.bulk_create([item.upload for item in issued])
    return issued


def _reject(upload: Upload, *, storage: Storage, reason: str, message: str) -> None:
    storage.delete(upload.incoming_key)
    upload.status = UploadStatus.REJECTED
    upload.reject_reason = reason
    upload.reject_message = message[:255]
    upload.save(update_fields=["status", "reject_reason", "reject_message", "updated_at"])


def _verify_pending(upload: Upload, *, storage: Storage) -> None:
    """Checks the incoming object and records VERIFIED or REJECTED (deleting what was refused)."""
    not_uploaded = UploadInvalid(
        "The file has not arrived. Send it to the upload URL first, then complete the upload.",
        field="uploadId",
        reason=RejectReason.NOT_UPLOADED,
    )
    info = storage.head(upload.incoming_key)
    if info is None:
        if timezone.now() < upload.expires_at:
            raise not_uploaded  # nothing recorded: the app may still send it
        minutes = math.ceil(settings.UPLOAD_URL_TTL_SECONDS / 60)
        return _reject(
            upload,
            storage=storage,
            reason=RejectReason.EXPIRED,
            message="The upload expired before the file arrived. Request a new upload and send the "
            f"file within {minutes} minutes.",
        )
    too_large = f"The file is larger than {_size_text(upload.max_bytes)}. Upload a smaller photo."
    if info.size > upload.max_bytes:
        return _reject(upload, storage=storage, reason=RejectReason.TOO_LARGE, message=too_large)
    if info.size == 0:
        return _reject(
            upload, storage=storage, reason=RejectReason.EMPTY, message="The file is empty. Upload a photo."
        )
    try:
        data = storage.read(upload.incoming_key, max_bytes=upload.max_bytes)
    except ObjectTooLarge:  # replaced by a bigger one since the HEAD
        return _reject(upload, storage=storage, reason=RejectReason.TOO_LARGE, message=too_large)
    except ObjectNotFound:
        raise not_uploaded from None
    try:
        facts = inspect_image(
            data, declared_content_type=upload.content_type, max_pixels=settings.UPLOAD_MAX_PIXELS
        )
    except ImageRejected as rejected:
        return _reject(upload, storage=storage, reason=rejected.reason, message=rejected.message)

    # Keep exactly the bytes that were checked, where the app cannot write; drop the incoming copy.
    storage.write(upload.key, data, content_type=facts.content_type)
    storage.delete(upload.incoming_key)
    upload.status = UploadStatus.VERIFIED
    upload.bytes = len(data)
    upload.width = facts.width
    upload.height = facts.height
    upload.format = facts.format
    upload.verified_at = timezone.now()
    upload.save(update_fields=["status", "bytes", "width", "height", "format", "verified_at", "updated_at"])


def upload_verify(*, user, upload_id) -> Upload:
    """Checks an uploaded file by its bytes, independently of what the storage enforced.

    Idempotent: a verified upload is returned as it is, a rejected one raises its error again. The row
    is locked while checking, so two concurrent calls check the file once.
    """
    with transaction.atomic():
        upload = upload_get_for_user(user=user, upload_id=upload_id, for_update=True)
        if upload.status == UploadStatus.PENDING:
            _verify_pending(upload, storage=get_storage())
    # Raised outside the atomic block, so the rejection stays recorded.
    if upload.status == UploadStatus.REJECTED:
        raise UploadInvalid(upload.reject_message, field="uploadId", reason=upload.reject_reason)
    return upload


def upload_replace_with_clean(*, upload_id, data: bytes, width: int, height: int) -> Upload:
    """Replaces a verified upload's file with `data`, a copy re-encoded from its pixels alone (a selfie
    that passed the photo checks), so nothing of the original (EXIF, GPS) is kept or served back. Once:
    a cleaned upload is returned as it is."""
    with transaction.atomic():
        upload = Upload.objects.select_for_update().get(pk=upload_id)
        if upload.cleaned_at is not None or upload.status != UploadStatus.VERIFIED:
            return upload
        get_storage().write(upload.key, data, content_type="image/jpeg")
        upload.bytes, upload.width, upload.height, upload.format = len(data), width, height, "JPEG"
        upload.cleaned_at = timezone.now()
        upload.save(update_fields=["bytes", "width", "height", "format", "cleaned_at", "updated_at"])
    return upload


def upload_refuse(*, upload_id, reason: str, message: str) -> Upload:
    """Records that a verified upload may not be used (a selfie the photo checks refused) and deletes its
    file; it stays refused with `reason`, like a file that failed verification."""
    with transaction.atomic():
        upload = Upload.objects.select_for_update().get(pk=upload_id)
        if upload.status != UploadStatus.VERIFIED:
            return upload
        storage = get_storage()
        storage.delete(upload.key)
        upload.status = UploadStatus.REJECTED
        upload.reject_reason = reason
        upload.reject_message = message[:255]
        upload.save(update_fields=["status", "reject_reason", "reject_message", "updated_at"])
    return upload


def upload_from_url(*, user, url: str, field: str = "imageUrl") -> Upload:
    """Fetches a photo that a client named by URL and keeps it as the user's VERIFIED upload, checked by
    its bytes like a sent file (`_verify_pending`). Nothing is recorded for a URL that is refused.

    Fetched inline, within IMAGE_URL_TIMEOUT_SECONDS and UPLOAD_MAX_BYTES, from public addresses only
    (apps/core/outbound.py): the caller (a create) answers at once with the error that names `field`,
    instead of accepting a generation that a worker may fail later. ValidationFailed when the URL is not
    fetchable (not http(s), a private address, unreachable, an error status, too big, not an image type),
    UploadInvalid when the bytes are not a usable photo."""
    url = (url or "").strip()
    if len(url) > 2000:
        raise ValidationFailed("Keep the image URL to 2000 characters.", field=field)
    try:
        fetched = fetch(
            url,
            allow_loopback=settings.IMAGE_URL_ALLOW_LOOPBACK,
            timeout=settings.IMAGE_URL_TIMEOUT_SECONDS,
            max_bytes=settings.UPLOAD_MAX_BYTES,
            accept=", ".join(sorted(ALLOWED_CONTENT_TYPES)),
        )
    except OutboundRefused as exc:
        raise ValidationFailed(f"The image URL cannot be fetched: {exc.message}", field=field) from None
    if not fetched.content_type.startswith("image/"):
        raise ValidationFailed(
            f"The image URL answered {fetched.content_type or 'no content type'}, not an image. "
            "Link the photo file itself (JPEG, PNG, HEIC or WebP).",
            field=field,
        )
    if not fetched.body:
        raise UploadInvalid("The image URL answered an empty file.", field=field, reason=RejectReason.EMPTY)
    # Servers label files loosely (image/jpg, application/octet-stream...): the bytes decide the type,
    # then the same checks as a sent file.
    image_format = sniff(fetched.body)
    content_type = CONTENT_TYPES[image_format] if image_format else fetched.content_type
    try:
        facts = inspect_image(
            fetched.body, declared_content_type=content_type, max_pixels=settings.UPLOAD_MAX_PIXELS
        )
    except ImageRejected as rejected:
        raise UploadInvalid(rejected.message, field=field, reason=rejected.reason) from None
    now = timezone.now()
    upload = Upload(
        user=user,
        content_type=facts.content_type,
        max_bytes=settings.UPLOAD_MAX_BYTES,
        expires_at=now,  # nothing is ever sent to its incoming key
        status=UploadStatus.VERIFIED,
        bytes=len(fetched.body),
        width=facts.width,
        height=facts.height,
        format=facts.format,
        verified_at=now,
    )
    upload.key = f"uploads/{user.id}/{upload.id}"
    upload.incoming_key = f"incoming/{user.id}/{upload.id}"
    upload.full_clean(validate_unique=False, validate_constraints=False)  # keys are fresh UUIDs
    get_storage().write(upload.key, fetched.body, content_type=facts.content_type)
    upload.save(force_insert=True)
    return upload
