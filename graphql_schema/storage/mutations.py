from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry import Info, relay
from strawberry.relay.types import GlobalIDValueError

from apps.core import errors as domain
from apps.storage import services

from ..errors import ConsentRequired, Error, NotFound, RateLimited, UploadInvalid, ValidationError, error_from
from ..permissions import require_user
from ..services import call_service
from .inputs import RequestUploadsInput
from .types import NameValue, UploadPayload, UploadsPayload, UploadTarget, absolute_url

UploadsResult = Annotated[
    UploadsPayload | ValidationError | RateLimited | NotFound | ConsentRequired,
    strawberry.union("UploadsResult"),
]
UploadResult = Annotated[UploadPayload | UploadInvalid | NotFound, strawberry.union("UploadResult")]


def _node_pk(value: str, type_name: str) -> str | None:
    try:
        global_id = relay.GlobalID.from_id(value)
    except (GlobalIDValueError, ValueError):
        return None
    return global_id.node_id if global_id.type_name == type_name else None


def _upload_pk(upload_id: str) -> str | None:
    return _node_pk(upload_id, "Upload")


def _target(info: Info, issued: services.IssuedUpload) -> UploadTarget:
    target = issued.target
    return UploadTarget(
        upload_id=strawberry.ID(relay.to_base64("Upload", issued.upload.pk)),
        url=absolute_url(info, target.url),
        method=target.method,
        fields=[NameValue(name=name, value=value) for name, value in target.fields],
        headers=[NameValue(name=name, value=value) for name, value in target.headers],
        file_field=target.file_field,
        expires_at=target.expires_at,
        max_bytes=target.max_bytes,
        upload=issued.upload,
    )


@strawberry.type
class StorageMutations:
    @strawberry.mutation(
        description="Upload targets for `count` files of one type. Send each file to its target with "
        "plain HTTP, then call completeUpload with its uploadId."
    )
    async def request_uploads(self, info: Info, input: RequestUploadsInput) -> UploadsResult:
        user = require_user(info)
        character_id = None
        if input.character_id is not None:
            character_id = _node_pk(input.character_id, "Character")
            if character_id is None:
                return error_from(domain.NotFound("This Soul ID does not exist.", field="characterId"))
        result = await call_service(
            services.uploads_request,
            user=user,
            count=input.count,
            content_type=input.content_type,
            character_id=character_id,
        )
        if isinstance(result, Error):
            return result
        return UploadsPayload(uploads=[_target(info, issued) for issued in result])

    @strawberry.mutation(
        description="Checks an uploaded file (size, type by its bytes, a safe decode). A refused file "
        "is deleted and the error says what to fix. Calling it again returns the same answer."
    )
    async def complete_upload(self, info: Info, upload_id: strawberry.ID) -> UploadResult:
        user = require_user(info)
        pk = _upload_pk(upload_id)
        if pk is None:
            return error_from(domain.NotFound("This upload does not exist.", field="uploadId"))
        result = await call_service(services.upload_verify, user=user, upload_id=pk)
        return result if isinstance(result, Error) else UploadPayload(upload=result)
