"""GraphQL types of uploads (API.md): Upload and the upload targets `requestUploads` hands out."""

from __future__ import annotations

from datetime import datetime

import strawberry
import strawberry_django
from strawberry import Info

from apps.storage import models, selectors

from ..enums import UploadRejectReason, UploadStatus
from ..toolkit import ModelNode, download_url


@strawberry_django.type(models.Upload, name="Upload", description="A file the app uploaded.")
class UploadType(ModelNode):
    content_type: str
    bytes: int | None = strawberry_django.field(description="Size in bytes, once verified.")
    width: int | None = strawberry_django.field(description="Pixels, once verified.")
    height: int | None = strawberry_django.field(description="Pixels, once verified.")
    expires_at: datetime = strawberry_django.field(description="When the upload URL stops working.")
    created_at: datetime
    status: UploadStatus  # type: ignore[valid-type]

    @strawberry_django.field(only=["reject_reason"], description="Why the file was refused, if it was.")
    async def reject_reason(self, root: strawberry.Parent[models.Upload]) -> UploadRejectReason | None:  # type: ignore[valid-type]
        return UploadRejectReason(root.reject_reason) if root.reject_reason else None

    @strawberry_django.field(
        only=["status", "key"], description="An expiring URL of the verified file; null until verified."
    )
    async def url(self, root: strawberry.Parent[models.Upload], info: Info) -> str | None:
        return download_url(info, root.key) if root.status == models.UploadStatus.VERIFIED else None

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        return queryset & selectors.uploads_visible_to(user=info.context.user)


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
