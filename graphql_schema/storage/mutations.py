from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry import Info

from apps.characters.services import character_uploads_request
from apps.storage import services

from ..errors import ConsentRequired, Error, NotFound, RateLimited, UploadInvalid, ValidationError
from ..permissions import require_user
from ..services import call_service
from ..toolkit import absolute_url, node_id, node_pk
from .inputs import RequestUploadsInput
from .types import NameValue, UploadPayload, UploadsPayload, UploadTarget

UploadsResult = Annotated[
    UploadsPayload | ValidationError | RateLimited | NotFound | ConsentRequired,
    strawberry.union("UploadsResult"),
]
UploadResult = Annotated[UploadPayload | UploadInvalid | NotFound, strawberry.union("UploadResult")]


def _target(info: Info, issued: services.IssuedUpload) -> UploadTarget:
    target = issued.target
    return UploadTarget(
        upload_id=node_id("Upload", issued.upload.pk),
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

        def request() -> list:
            if input.character_id is None:  # a selfie for a generation
                return services.uploads_request(user=user, count=input.count, content_type=input.content_type)
            # Photos for a Soul ID: its consent is checked first.
            character_id = node_pk(input.character_id, "Character", field="characterId")
            return character_uploads_request(
                user=user, character_id=character_id, count=input.count, content_type=input.content_type
            )

        result = await call_service(request)
        if isinstance(result, Error):
            return result
        return UploadsPayload(uploads=[_target(info, issued) for issued in result])

    @strawberry.mutation(
        description="Checks an uploaded file (size, type by its bytes, a safe decode). A refused file "
        "is deleted and the error says what to fix. Calling it again returns the same answer."
    )
    async def complete_upload(self, info: Info, upload_id: strawberry.ID) -> UploadResult:
        user = require_user(info)
        result = await call_service(
            lambda: services.upload_verify(
                user=user, upload_id=node_pk(upload_id, "Upload", field="uploadId")
            )
        )
        return result if isinstance(result, Error) else UploadPayload(upload=result)
