from __future__ import annotations

from typing import Annotated

import strawberry
from asgiref.sync import sync_to_async
from strawberry import Info

from apps.core.errors import DomainError
from apps.core.errors import NotFound as NotFoundError
from apps.generations import selectors, services

from ..enums import AspectRatio, QualityTier, SpeedLane
from ..errors import (
    CharacterNotReady,
    Error,
    NotFound,
    UnsupportedOption,
    UploadInvalid,
    ValidationError,
    not_found,
    page_arguments_check,
    public_error,
)
from ..permissions import require_user
from ..services import call_service
from ..toolkit import node_pk
from .inputs import GenerationInput
from .mutations import generation_request
from .types import GenerationConnection, GenerationType, QuotePayload

QuoteResult = Annotated[
    QuotePayload | ValidationError | NotFound | UnsupportedOption | UploadInvalid | CharacterNotReady,
    strawberry.union("QuoteResult"),
]


@strawberry.type
class GenerationQueries:
    @strawberry.field(description="The price in credits and the ETA of a generation, before creating it.")
    async def generation_quote(self, info: Info, input: GenerationInput) -> QuoteResult:
        user = require_user(info)
        result = await call_service(
            lambda: services.generation_quote(user=user, request=generation_request(input))
        )
        if isinstance(result, Error):
            return result
        return QuotePayload(
            credits=result.credits,
            eta_seconds=result.eta_seconds,
            balance=result.balance,
            aspect_ratio=AspectRatio(result.aspect_ratio),
            duration_seconds=result.duration_seconds,
            quality=QualityTier(result.quality),
            speed=SpeedLane(result.lane),
        )

    @strawberry.field(description="One of your generations. Another user's id is NOT_FOUND.")
    async def generation(self, info: Info, id: strawberry.ID) -> GenerationType | None:
        user = require_user(info)
        try:
            return await sync_to_async(selectors.generation_get_for_user)(
                user=user, generation_id=node_pk(id, "Generation")
            )
        except NotFoundError:
            raise not_found("generation") from None

    @strawberry.field(description="Your generations, newest first.")
    async def generations(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> GenerationConnection:
        user = require_user(info)
        page_arguments_check(info, first=first, after=after, last=last, before=before)

        def page() -> GenerationConnection:
            queryset = selectors.generations_visible_to(user=user).select_related("trend__category", "route")
            connection = GenerationConnection.resolve_connection(
                queryset, info=info, first=first, after=after, last=last, before=before
            )
            # Evaluate here, in the worker thread: the edges are read in async code afterwards.
            for edge in connection.edges:
                _ = edge.node.pk
            return connection

        try:
            return await sync_to_async(page)()
        except DomainError as exc:
            raise public_error(exc) from None
