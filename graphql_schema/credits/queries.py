from __future__ import annotations

import strawberry
from asgiref.sync import sync_to_async
from strawberry import Info

from ..permissions import require_user
from .subscriptions import wallet_snapshot
from .types import Wallet


@strawberry.type
class CreditQueries:
    @strawberry.field(description="The signed-in user's balance and credits on hold.")
    async def wallet(self, info: Info) -> Wallet:
        wallet, _ = await sync_to_async(wallet_snapshot)(require_user(info))
        return wallet
