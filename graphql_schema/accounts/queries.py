from __future__ import annotations

import strawberry
from strawberry import Info

from ..errors import unauthenticated
from .types import UserType


@strawberry.type
class AccountQueries:
    @strawberry.field(description="The signed-in user; null when not signed in.")
    async def me(self, info: Info) -> UserType | None:
        if info.context.token_rejected:
            raise unauthenticated(expired=True)
        return info.context.user
