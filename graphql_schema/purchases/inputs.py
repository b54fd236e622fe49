from __future__ import annotations

import strawberry

from ..enums import Platform


@strawberry.input(description="A purchase the store SDK finished, for the server to verify with the store.")
class VerifyPurchaseInput:
    platform: Platform  # type: ignore[valid-type]
    signed_transaction: str | None = strawberry.field(
        default=None, description="App Store: StoreKit 2's Transaction.jwsRepresentation."
    )
    purchase_token: str | None = strawberry.field(
        default=None, description="Google Play: the purchase token."
    )
    product_id: str | None = strawberry.field(default=None, description="Google Play: the product id bought.")
