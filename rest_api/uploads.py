"""/v1/uploads: presigned targets for selfies (apps/storage's upload flow, as GraphQL's requestUploads).
Send the file to the target, then name its `upload_id` as `photo_upload_id`; the create checks it."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Status

from apps.storage.services import uploads_request

from .auth import UPLOADS, account_of
from .problems import Problem
from .schemas import NameValue, UploadsCreate, UploadsOut, UploadTargetOut

router = Router(tags=["uploads"])


@router.post(
    "/uploads",
    auth=UPLOADS,
    response={201: UploadsOut, 401: Problem, 403: Problem, 422: Problem, 429: Problem},
    summary="Upload targets for photos",
)
def create_uploads(request: HttpRequest, body: UploadsCreate):
    issued = uploads_request(user=account_of(request), count=body.count, content_type=body.content_type)
    targets = []
    for item in issued:
        target = item.target
        url = request.build_absolute_uri(target.url) if target.url.startswith("/") else target.url
        targets.append(
            UploadTargetOut(
                upload_id=str(item.upload.pk),
                url=url,
                method=target.method,
                fields=[NameValue(name=n, value=v) for n, v in target.fields],
                headers=[NameValue(name=n, value=v) for n, v in target.headers],
                file_field=target.file_field,
                expires_at=target.expires_at,
                max_bytes=target.max_bytes,
            )
        )
    return Status(201, UploadsOut(data=targets))
