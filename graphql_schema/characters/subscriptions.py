from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from asgiref.sync import sync_to_async
from strawberry import Info

from apps.characters.events import FEED

from ..live import follow_row, shared_event
from ..permissions import require_user
from .queries import character_for_api
from .types import CharacterEvent


def _event(character) -> CharacterEvent:
    return shared_event(character, _build_event)


def _build_event(character) -> CharacterEvent:
    return CharacterEvent(sequence=character.sequence, character=character)


@strawberry.type
class CharacterSubscriptions:
    @strawberry.subscription(
        description="The Soul ID's current state at once, then after every change: photo verdicts, "
        "training progress, READY or FAILED. Ends when the Soul ID is deleted."
    )
    async def character_updated(self, info: Info, id: strawberry.ID) -> AsyncGenerator[CharacterEvent, None]:
        user = require_user(info)
        load = sync_to_async(character_for_api)
        async for event in follow_row(
            info,
            FEED,
            id,
            lambda pk: load(user=user, character_id=pk),
            type_name="Character",
            what="Soul ID",
            present=_event,
        ):
            yield event
