from __future__ import annotations

import strawberry
from asgiref.sync import sync_to_async
from django.db.models import prefetch_related_objects
from strawberry import Info

from apps.characters import selectors
from apps.core.errors import NotFound as NotFoundError

from ..errors import not_found
from ..permissions import require_user
from ..toolkit import node_pk
from .types import CharacterType


def character_for_api(*, user, character_id):
    """A Soul ID of the user's with its photos loaded (NotFound for another user's)."""
    character = selectors.character_get_for_user(user=user, character_id=character_id)
    prefetch_related_objects([character], "photos")
    return character


@strawberry.type
class CharacterQueries:
    @strawberry.field(description="Your Soul IDs, newest first.")
    async def characters(self, info: Info) -> list[CharacterType]:
        user = require_user(info)

        def load() -> list:
            return list(selectors.characters_visible_to(user=user).prefetch_related("photos"))

        return await sync_to_async(load)()

    @strawberry.field(description="One of your Soul IDs. Another user's id is NOT_FOUND.")
    async def character(self, info: Info, id: strawberry.ID) -> CharacterType | None:
        user = require_user(info)
        try:
            return await sync_to_async(character_for_api)(user=user, character_id=node_pk(id, "Character"))
        except NotFoundError:
            raise not_found("Soul ID") from None
