from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry import Info

from apps.generations import services

from ..accounts.mutations import DeleteResult
from ..accounts.types import DeletePayload
from ..enums import QualityTier
from ..errors import (
    CharacterNotReady,
    Error,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InsufficientCredits,
    ModerationRefused,
    NotFound,
    RateLimited,
    UnsupportedOption,
    UploadInvalid,
    ValidationError,
)
from ..permissions import require_user
from ..services import call_service
from ..toolkit import node_pk
from .inputs import GenerationInput
from .types import GenerationPayload, SharePayload

GenerationResult = Annotated[
    GenerationPayload
    | ValidationError
    | NotFound
    | InsufficientCredits
    | RateLimited
    | IdempotencyKeyReused
    | IdempotencyInProgress
    | UnsupportedOption
    | UploadInvalid
    | CharacterNotReady
    | ModerationRefused,
    strawberry.union("GenerationResult"),
]
ShareResult = Annotated[SharePayload | NotFound | ValidationError, strawberry.union("ShareResult")]


def generation_request(input: GenerationInput) -> services.GenerationRequest:
    """The request of a GenerationInput; NotFound for an ID that names nothing (call it in `call_service`)."""
    return services.GenerationRequest(
        trend_slug=input.trend_slug,
        prompt=input.prompt,
        character_id=str(node_pk(input.character_id, "Character", field="characterId"))
        if input.character_id
        else None,
        photo_upload_id=str(node_pk(input.photo_upload_id, "Upload", field="photoUploadId"))
        if input.photo_upload_id
        else None,
        aspect_ratio=input.aspect_ratio.value if input.aspect_ratio else None,
        duration_seconds=input.duration_seconds,
        quality=input.quality.value if input.quality else None,
        speed=input.speed.value if input.speed else None,
        seed=input.seed,
        idempotency_key=input.idempotency_key,
        with_sound=input.with_sound is not False,
    )


@strawberry.type
class GenerationMutations:
    @strawberry.mutation(
        description="Make a video: holds its price (charged only if it succeeds) and queues it. Send an "
        "idempotencyKey: retrying with the same key and input returns the same generation, charged once."
    )
    async def create_generation(self, info: Info, input: GenerationInput) -> GenerationResult:
        user = require_user(info)
        result = await call_service(
            lambda: services.generation_create(user=user, request=generation_request(input))
        )
        return result if isinstance(result, Error) else GenerationPayload(generation=result)

    @strawberry.mutation(
        description="Stop a queued or running generation and give its credits back. A finished one is "
        "returned as it is."
    )
    async def cancel_generation(self, info: Info, id: strawberry.ID) -> GenerationResult:
        user = require_user(info)
        result = await call_service(
            lambda: services.generation_cancel(user=user, generation_id=node_pk(id, "Generation"))
        )
        return result if isinstance(result, Error) else GenerationPayload(generation=result)

    @strawberry.mutation(
        description="Render a succeeded DRAFT again at STANDARD or CINEMA with the same inputs, seed, shot "
        "plan and model: a new generation linked to its draft, priced as its tier (held, charged only if it "
        "succeeds). Idempotent by idempotencyKey like createGeneration."
    )
    async def finalize_generation(
        self, info: Info, id: strawberry.ID, quality: QualityTier, idempotency_key: str | None = None
    ) -> GenerationResult:
        user = require_user(info)
        result = await call_service(
            lambda: services.generation_finalize(
                user=user,
                generation_id=node_pk(id, "Generation"),
                quality=quality.value,
                idempotency_key=idempotency_key,
            )
        )
        return result if isinstance(result, Error) else GenerationPayload(generation=result)

    @strawberry.mutation(description="Delete a generation and its video (cancels it first if still going).")
    async def delete_generation(self, info: Info, id: strawberry.ID) -> DeleteResult:
        user = require_user(info)
        result = await call_service(
            lambda: services.generation_delete(user=user, generation_id=node_pk(id, "Generation"))
        )
        return result if isinstance(result, Error) else DeletePayload(id=id)

    @strawberry.mutation(description="Count that the user shared a finished video (and its trend).")
    async def record_share(
        self, info: Info, generation_id: strawberry.ID, channel: str | None = None
    ) -> ShareResult:
        user = require_user(info)
        result = await call_service(
            lambda: services.generation_share_record(
                user=user, generation_id=node_pk(generation_id, "Generation"), channel=channel
            )
        )
        return result if isinstance(result, Error) else SharePayload(generation=result)
