from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from asgiref.sync import sync_to_async
from strawberry import Info

from apps.core.events import user_group
from apps.credits.selectors import wallet_state

from ..permissions import require_user
from .types import Wallet


def wallet_snapshot(user) -> tuple[Wallet, int]:
    balance, held, version = wallet_state(user=user)
    return Wallet(balance=balance, held=held), version


@strawberry.type
class CreditSubscriptions:
    @strawberry.subscription(description="The current balance at once, then after every change.")
    async def wallet_updated(self, info: Info) -> AsyncGenerator[Wallet, None]:
        user = require_user(info)
        # Join first, then read: a change committed in between arrives as an event, none is missed.
        async with info.context.ws.subscribe(user_group(user.pk)) as events:
            snapshot, version = await sync_to_async(wallet_snapshot)(user)
            yield snapshot
            async for payload in events:
                # Events carry the state as committed by the wallet's row-locked writer, with its version:
                # one not newer than what was sent (reordered, or older than the snapshot) is dropped.
                if payload.get("kind") != "wallet" or payload["version"] <= version:
                    continue
                version = payload["version"]
                yield Wallet(balance=payload["balance"], held=payload["held"])
