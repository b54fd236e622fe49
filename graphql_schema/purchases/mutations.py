from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry import Info

from apps.purchases import services
from apps.purchases.selectors import plan_of

from ..credits.subscriptions import wallet_snapshot
from ..enums import Platform
from ..errors import (
    InvalidReceipt,
    ProductUnknown,
    RateLimited,
    ReceiptBelongsToAnotherUser,
    StoreUnavailable,
    ValidationError,
)
from ..permissions import require_user
from ..services import call_service
from .inputs import VerifyPurchaseInput
from .types import Plan, Purchase, PurchasePayload

PurchaseResult = Annotated[
    PurchasePayload
    | InvalidReceipt
    | ReceiptBelongsToAnotherUser
    | ProductUnknown
    | StoreUnavailable
    | ValidationError
    | RateLimited,
    strawberry.union("PurchaseResult"),
]


def _payload(user, outcome: services.PurchaseOutcome) -> PurchasePayload:
    wallet, _ = wallet_snapshot(user)
    plan = plan_of(user=user)
    return PurchasePayload(
        wallet=wallet,
        plan=Plan.of(plan) if plan else None,
        purchase=Purchase.of(outcome.purchase) if outcome.purchase else None,
    )


@strawberry.type
class PurchaseMutations:
    @strawberry.mutation(
        description=(
            "Verifies a finished store purchase with the store and grants its credits, once: sending the "
            "same purchase again grants nothing more. Call it for every transaction the store SDK reports, "
            "then finish the transaction in the SDK."
        )
    )
    async def verify_purchase(self, info: Info, input: VerifyPurchaseInput) -> PurchaseResult:
        user = require_user(info)
        return await call_service(
            lambda: _payload(
                user,
                services.purchase_verify(
                    user=user,
                    platform=input.platform.value,
                    signed_transaction=input.signed_transaction,
                    purchase_token=input.purchase_token,
                    product_id=input.product_id,
                ),
            )
        )

    @strawberry.mutation(description='Re-reads the user\'s purchases from the store ("Restore purchases").')
    async def restore_purchases(self, info: Info, platform: Platform) -> PurchaseResult:  # type: ignore[valid-type]
        user = require_user(info)
        return await call_service(
            lambda: _payload(user, services.purchases_restore(user=user, platform=platform.value))
        )
