from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from asgiref.sync import sync_to_async
from strawberry import Info

from apps.core.events import user_group
from apps.credits.selectors import wallet_state
from apps.credits.services import WALLET_EVENT_KIND

from ..live import follow
from ..permissions import require_user
from .types import Wallet


def wallet_snapshot(user) -> tuple[Wallet, int]:
    balance, held, version = wallet_state(user=user)
    return Wallet(balance=balance, held=held), version


def _version(snapshot: tuple[Wallet, int]) -> int:
    return snapshot[1]


def _wallet(snapshot: tuple[Wallet, int]) -> Wallet:
    return snapshot[0]


@strawberry.type
class CreditSubscriptions:
    @strawberry.subscription(description="The current balance at once, then after every change.")
    async def wallet_updated(self, info: Info) -> AsyncGenerator[Wallet, None]:
        user = require_user(info)
        load = sync_to_async(wallet_snapshot)
        async for wallet in follow(
            info,
            group=user_group(user.pk),
            kind=WALLET_EVENT_KIND,
            load=lambda: load(user),
            sequence=_version,
            present=_wallet,
        ):
            yield wallet
