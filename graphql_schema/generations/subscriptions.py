from __future__ import annotations

import copy
from collections.abc import AsyncGenerator

import strawberry
from asgiref.sync import sync_to_async
from strawberry import Info

from apps.core.errors import NotFound as NotFoundError
from apps.generations import selectors
from apps.generations.events import EVENT_KIND, generation_apply_state, generation_group
from apps.generations.models import Generation

from ..errors import not_found
from ..permissions import require_user
from .types import GenerationEvent, node_pk


def _snapshot(user, pk) -> Generation:
    return selectors.generation_get_for_user(user=user, generation_id=pk)


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
        pk = node_pk(id, "Generation")
        try:
            await sync_to_async(_snapshot)(user, pk)  # another user's generation: no group is joined
        except NotFoundError:
            raise not_found("generation") from None
        # Join first, then read: a change committed in between arrives as a message, none is missed.
        async with info.context.ws.subscribe(generation_group(pk)) as messages:
            try:
                current = await sync_to_async(_snapshot)(user, pk)
            except NotFoundError:
                raise not_found("generation") from None
            yield GenerationEvent(sequence=current.api_sequence, generation=current)
            if current.is_terminal or current.deleted_at is not None:
                return
            async for payload in messages:
                # Messages carry the state as committed by the row-locked writer, with its sequence: one
                # not newer than what was sent (reordered, or older than the snapshot) is dropped.
                if payload.get("kind") != EVENT_KIND or payload["sequence"] <= current.api_sequence:
                    continue
                current = copy.copy(current)
                current.__dict__.pop("_queue_estimate", None)
                generation_apply_state(current, payload["state"])
                current.api_sequence = payload["sequence"]
                yield GenerationEvent(sequence=current.api_sequence, generation=current)
                if current.is_terminal or current.deleted_at is not None:
                    return
