"""Uploads: a file the app sends straight to storage, then asks the server to check."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.core.models import BaseModel


class UploadStatus(models.TextChoices):
    PENDING = "PENDING"  # issued; the file may or may not be there yet
    VERIFIED = "VERIFIED"  # checked by the server; the checked bytes are at `key`
    REJECTED = "REJECTED"  # refused for `reject_reason`; nothing kept in storage


class RejectReason(models.TextChoices):
    NOT_UPLOADED = "NOT_UPLOADED"  # not recorded on the upload: the app may still send the file
    EXPIRED = "EXPIRED"
    EMPTY = "EMPTY"
    TOO_LARGE = "TOO_LARGE"
    UNSUPPORTED_TYPE = "UNSUPPORTED_TYPE"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    ANIMATED = "ANIMATED"
    TOO_MANY_PIXELS = "TOO_MANY_PIXELS"
    CORRUPT = "CORRUPT"
    # A selfie refused by the photo checks (apps.characters.photo_checks' codes, same names)
    TOO_SMALL = "TOO_SMALL"
    NO_FACE = "NO_FACE"
    MULTIPLE_FACES = "MULTIPLE_FACES"
    FACE_TOO_SMALL = "FACE_TOO_SMALL"
    FACE_CUT_OFF = "FACE_CUT_OFF"
    BLURRY = "BLURRY"
    TOO_DARK = "TOO_DARK"
    TOO_BRIGHT = "TOO_BRIGHT"


class Upload(BaseModel):
    """One file upload. The server chooses both keys; `upload_prefixes_for_user` lists their prefixes.

    The app sends the file to `incoming_key` (`incoming/<user uuid>/<upload uuid>`; it can write there
    until `expires_at`). Verification reads it, checks the bytes, writes exactly those bytes to `key`
    (`uploads/<user uuid>/<upload uuid>`) and deletes `incoming_key`, so `key` only ever holds bytes the
    server checked: a second POST to the still-valid upload URL changes nothing that is used. Everything
    else reads `key`, and only when the status is VERIFIED. Anything left under `incoming/` (a file sent
    after verification, or never completed) is for a bucket lifecycle rule on that prefix to expire.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads")
    key = models.CharField(max_length=255, unique=True)
    incoming_key = models.CharField(max_length=255, unique=True)
    content_type = models.CharField(max_length=32)
    max_bytes = models.PositiveIntegerField()
    expires_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=UploadStatus.choices, default=UploadStatus.PENDING)
    reject_reason = models.CharField(max_length=32, choices=RejectReason.choices, blank=True)
    reject_message = models.CharField(max_length=255, blank=True)
    bytes = models.PositiveIntegerField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    format = models.CharField(max_length=16, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    # When `key` was replaced by a copy re-encoded from the pixels alone (no EXIF, GPS, XMP, ICC): a
    # selfie that passed the photo checks (`upload_replace_with_clean`).
    cleaned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "-created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status=UploadStatus.VERIFIED)
                | Q(bytes__isnull=False, width__isnull=False, height__isnull=False),
                name="upload_verified_has_facts",
            ),
            models.CheckConstraint(
                condition=~Q(status=UploadStatus.REJECTED) | ~Q(reject_reason=""),
                name="upload_rejected_has_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"
