from __future__ import annotations

import uuid
from typing import Annotated

import strawberry
from asgiref.sync import sync_to_async
from strawberry import Info

from apps.characters import services

from ..accounts.mutations import DeleteResult
from ..accounts.types import DeletePayload
from ..errors import (
    CharacterNotReady,
    ConsentRequired,
    Error,
    InsufficientCredits,
    NotEnoughPhotos,
    NotFound,
    TooManyPhotos,
    UnsupportedOption,
    UploadInvalid,
    ValidationError,
)
from ..permissions import require_user
from ..services import call_service
from ..toolkit import node_pk
from .inputs import CreateCharacterInput
from .queries import character_for_api
from .types import CharacterPayload

CharacterResult = Annotated[
    CharacterPayload
    | ValidationError
    | NotFound
    | ConsentRequired
    | TooManyPhotos
    | NotEnoughPhotos
    | CharacterNotReady
    | UploadInvalid
    | InsufficientCredits
    | UnsupportedOption,
    strawberry.union("CharacterResult"),
]


def _character_pk(character_id: strawberry.ID) -> uuid.UUID:
    return node_pk(character_id, "Character", field="characterId")


def _user_agent(info: Info) -> str:
    request = getattr(info.context, "request", None)
    headers = getattr(request, "headers", None) or {}
    return headers.get("User-Agent", "") if hasattr(headers, "get") else ""


async def _payload(user, result) -> CharacterResult:
    if isinstance(result, Error):
        return result
    return CharacterPayload(
        character=await sync_to_async(character_for_api)(user=user, character_id=result.pk)
    )


@strawberry.type
class CharacterMutations:
    @strawberry.mutation(
        description="Start a Soul ID. `consent` must be true: the server records which consent text was "
        "agreed to, when and from where (CONSENT_REQUIRED otherwise, and nothing is stored)."
    )
    async def create_character(self, info: Info, input: CreateCharacterInput) -> CharacterResult:
        user = require_user(info)
        result = await call_service(
            services.character_create,
            user=user,
            name=input.name,
            consent=input.consent,
            ip_address=info.context.client_ip,
            user_agent=_user_agent(info),
        )
        return await _payload(user, result)

    @strawberry.mutation(
        description="Add your uploaded photos (see requestUploads) to a Soul ID. Each is checked on the "
        "server; follow the verdicts on `character` or `characterUpdated`. At most `maxPhotos` in all."
    )
    async def add_character_photos(
        self, info: Info, character_id: strawberry.ID, upload_ids: list[strawberry.ID]
    ) -> CharacterResult:
        user = require_user(info)
        result = await call_service(
            lambda: services.character_add_photos(
                user=user,
                character_id=_character_pk(character_id),
                upload_ids=[node_pk(upload_id, "Upload", field="uploadIds") for upload_id in upload_ids],
            )
        )
        return await _payload(user, result)

    @strawberry.mutation(description="Remove a photo from a Soul ID (deletes it from storage).")
    async def remove_character_photo(
        self, info: Info, character_id: strawberry.ID, photo_id: strawberry.ID
    ) -> CharacterResult:
        user = require_user(info)
        result = await call_service(
            lambda: services.character_remove_photo(
                user=user,
                character_id=_character_pk(character_id),
                photo_id=node_pk(photo_id, "CharacterPhoto", field="photoId"),
            )
        )
        return await _payload(user, result)

    @strawberry.mutation(
        description="Train the Soul ID on its accepted, distinct photos (10 to 20): holds its price in "
        "credits, charged only when it is READY. Follow the progress on `characterUpdated`."
    )
    async def train_character(self, info: Info, character_id: strawberry.ID) -> CharacterResult:
        user = require_user(info)
        result = await call_service(
            lambda: services.character_train(user=user, character_id=_character_pk(character_id))
        )
        return await _payload(user, result)

    @strawberry.mutation(
        description="Delete a Soul ID and all of its biometric data (photos, crops, face data, trained "
        "model). It disappears at once; the erasure itself runs in the background and is audited."
    )
    async def delete_character(self, info: Info, character_id: strawberry.ID) -> DeleteResult:
        user = require_user(info)
        result = await call_service(
            lambda: services.character_delete(user=user, character_id=_character_pk(character_id))
        )
        if isinstance(result, Error):
            return result
        return DeletePayload(id=strawberry.ID(str(character_id)))
