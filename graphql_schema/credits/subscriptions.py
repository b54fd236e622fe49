from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from asgiref.sync import sync_to_async
from strawberry import Info

from apps.core.events import user_group
from apps.credits.selectors import wallet_state

from ..permissions import require_user
from .types import Wallet


def wallet_snapshot(user) -> Wallet:
    balance, held = wallet_state(user=user)
    return Wallet(balance=balance, held=held)


@strawberry.type
class CreditSubscriptions:
    @strawberry.subscription(description="The current balance at once, then after every change.")
    async def wallet_updated(self, info: Info) -> AsyncGenerator[Wallet, None]:
        user = require_user(info)
        # Join first, then read: a change committed in between arrives as an event, none is missed.
        async with info.context.ws.subscribe(user_group(user.pk)) as events:
            last = await sync_to_async(wallet_snapshot)(user)
            yield last
            async for payload in events:
                if payload.get("kind") != "wallet":
                    continue
                # Events carry the state as committed by the wallet's row-locked writer.
                current = Wallet(balance=payload["balance"], held=payload["held"])
                if current != last:
                    last = current
                    yield current
