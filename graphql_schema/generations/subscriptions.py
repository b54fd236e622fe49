from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from asgiref.sync import sync_to_async
from strawberry import Info

from apps.generations import selectors
from apps.generations.events import FEED
from apps.generations.models import Generation

from ..live import follow_row, shared_event
from ..permissions import require_user
from .types import GenerationEvent


def _finished(generation: Generation) -> bool:
    return generation.is_terminal or generation.deleted_at is not None


def _event(generation: Generation) -> GenerationEvent:
    return shared_event(generation, _build_event)


def _build_event(generation: Generation) -> GenerationEvent:
    return GenerationEvent(sequence=generation.api_sequence, generation=generation)


@strawberry.type
class GenerationSubscriptions:
    @strawberry.subscription(
        description="The generation's current state at once, then every change (with its queue position "
        "and ETA), until a finished state (SUCCEEDED, FAILED, CANCELED), after which it ends."
    )
    async def generation_updated(
        self, info: Info, id: strawberry.ID
    ) -> AsyncGenerator[GenerationEvent, None]:
        user = require_user(info)
        load = sync_to_async(selectors.generation_get_for_user)
        async for event in follow_row(
            info,
            FEED,
            id,
            lambda pk: load(user=user, generation_id=pk),
            type_name="Generation",
            what="generation",
            present=_event,
            finished=_finished,
        ):
            yield event
