from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from asgiref.sync import sync_to_async
from strawberry import Info

from apps.characters.services import EVENT_KIND, character_group
from apps.core.errors import NotFound as NotFoundError

from ..errors import not_found
from ..generations.types import node_pk
from ..permissions import require_user
from .queries import character_for_api
from .types import CharacterEvent


@strawberry.type
class CharacterSubscriptions:
    @strawberry.subscription(
        description="The Soul ID's current state at once, then after every change: photo verdicts, "
        "training progress, READY or FAILED. Ends when the Soul ID is deleted."
    )
    async def character_updated(self, info: Info, id: strawberry.ID) -> AsyncGenerator[CharacterEvent, None]:
        user = require_user(info)
        pk = node_pk(id, "Character")
        load = sync_to_async(character_for_api)
        try:
            await load(user=user, character_id=pk)  # another user's Soul ID: no group is joined
        except NotFoundError:
            raise not_found("Soul ID") from None
        # Join first, then read: a change committed in between arrives as a message, none is missed.
        async with info.context.ws.subscribe(character_group(pk)) as messages:
            try:
                current = await load(user=user, character_id=pk)
            except NotFoundError:
                raise not_found("Soul ID") from None
            yield CharacterEvent(sequence=current.sequence, character=current)
            async for payload in messages:
                # A message is a hint with the sequence of the change: the state is read again; one not
                # newer than what was sent (reordered, or older than the last read) is dropped.
                if payload.get("kind") != EVENT_KIND or payload["sequence"] <= current.sequence:
                    continue
                try:
                    current = await load(user=user, character_id=pk)
                except NotFoundError:  # deleted: the subscription ends
                    return
                yield CharacterEvent(sequence=current.sequence, character=current)
