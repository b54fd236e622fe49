from __future__ import annotations

import enum
from datetime import datetime

import strawberry
import strawberry_django
from strawberry import Info, relay

from apps.storage import models
from apps.storage.backends import get_storage

from ..errors import UploadRejectReason


def absolute_url(info: Info, url: str) -> str:
    """Storage URLs served by this server are paths unless PUBLIC_BASE_URL is set: resolve them
    against the request the app made, so the app always gets a URL it can call."""
    if "://" in url:
        return url
    request = getattr(info.context, "request", None)
    build = getattr(request, "build_absolute_uri", None)
    return build(url) if build is not None else url


@strawberry.enum(description="Where an upload is: waiting for its file and check, usable, or refused.")
class UploadStatus(enum.Enum):
    PENDING = models.UploadStatus.PENDING.value
    VERIFIED = models.UploadStatus.VERIFIED.value
    REJECTED = models.UploadStatus.REJECTED.value


@strawberry_django.type(models.Upload, name="Upload", description="A file the app uploaded.")
class UploadType(relay.Node):
    content_type: str
    bytes: int | None = strawberry_django.field(description="Size in bytes, once verified.")
    width: int | None = strawberry_django.field(description="Pixels, once verified.")
    height: int | None = strawberry_django.field(description="Pixels, once verified.")
    expires_at: datetime = strawberry_django.field(description="When the upload URL stops working.")
    created_at: datetime

    @strawberry_django.field(only=["status"])
    def status(self, root: models.Upload) -> UploadStatus:
        return UploadStatus(root.status)

    @strawberry_django.field(only=["reject_reason"], description="Why the file was refused, if it was.")
    def reject_reason(self, root: models.Upload) -> UploadRejectReason | None:
        return UploadRejectReason(root.reject_reason) if root.reject_reason else None

    @strawberry_django.field(
        only=["status", "key"], description="An expiring URL of the verified file; null until verified."
    )
    def url(self, root: models.Upload, info: Info) -> str | None:
        if root.status != models.UploadStatus.VERIFIED:
            return None
        return absolute_url(info, get_storage().download_url(root.key))

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        # Global IDs (`node`) never reveal another user's upload.
        user = info.context.user
        return queryset.filter(user=user) if user is not None else queryset.none()


@strawberry.type(description="A name and a value: one form field or one HTTP header.")
class NameValue:
    name: str
    value: str


@strawberry.type(
    description=(
        "Where and how to send one file: an HTTP `method` request to `url` with `headers`, as "
        "multipart/form-data with every entry of `fields` in order, then the file last, in the field "
        "`fileField`, at most `maxBytes` bytes, before `expiresAt`. Then call completeUpload(uploadId)."
    )
)
class UploadTarget:
    upload_id: strawberry.ID
    url: str
    method: str
    fields: list[NameValue]
    headers: list[NameValue]
    file_field: str
    expires_at: datetime
    max_bytes: int
    upload: UploadType


@strawberry.type
class UploadsPayload:
    uploads: list[UploadTarget]


@strawberry.type
class UploadPayload:
    upload: UploadType
