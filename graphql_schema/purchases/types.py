"""GraphQL types of purchases (API.md, December 2026 additions): Product, Plan, verifyPurchase's payload."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.relay import to_base64

from apps.purchases import models
from apps.purchases.stores import SubscriptionState

from ..credits.types import Wallet
from ..enums import PlanStatus, ProductKind, PurchaseStatus


@strawberry.type(description="Something the paywall sells. Prices and titles come from the store SDK.")
class Product:
    id: strawberry.ID
    store_product_id: str = strawberry.field(description="The product's id in this platform's store.")
    kind: ProductKind  # type: ignore[valid-type]
    credits: int = strawberry.field(
        description="Credits per purchase (a pack) or per billing period (a plan)."
    )
    level: int = strawberry.field(description="Plans: a higher level upgrades a lower one. 0 for packs.")

    @classmethod
    def of(cls, product: models.Product, *, platform: str) -> Product:
        return cls(
            id=strawberry.ID(to_base64("Product", product.pk)),
            store_product_id=product.store_product_id(platform),
            kind=ProductKind(product.kind),
            credits=product.credits,
            level=product.level,
        )


@strawberry.type(description="The user's plan (subscription), as its store last reported it.")
class Plan:
    level: int
    status: PlanStatus  # type: ignore[valid-type]
    store_product_id: str
    credits_per_period: int
    expires_at: datetime | None = strawberry.field(description="End of the period paid for.")
    renews_at: datetime | None = strawberry.field(description="Next renewal; null when it will not renew.")
    in_grace_period: bool = strawberry.field(description="A payment failed; the plan still works meanwhile.")
    will_renew: bool

    @classmethod
    def of(cls, subscription: models.Subscription) -> Plan:
        product = subscription.product
        return cls(
            level=product.level,
            status=PlanStatus(subscription.state),
            store_product_id=product.store_product_id(subscription.platform),
            credits_per_period=product.credits,
            expires_at=subscription.expires_at,
            renews_at=subscription.expires_at if subscription.will_renew else None,
            in_grace_period=subscription.state == SubscriptionState.GRACE_PERIOD,
            will_renew=subscription.will_renew,
        )


@strawberry.type(description="One verified store charge.")
class Purchase:
    store_product_id: str
    transaction_id: str
    credits: int = strawberry.field(description="Credits this charge granted.")
    status: PurchaseStatus  # type: ignore[valid-type]
    purchased_at: datetime

    @classmethod
    def of(cls, purchase: models.Purchase) -> Purchase:
        return cls(
            store_product_id=purchase.product.store_product_id(purchase.platform),
            transaction_id=purchase.transaction_id,
            credits=purchase.credits,
            status=PurchaseStatus(purchase.status),
            purchased_at=purchase.purchased_at,
        )


@strawberry.type
class PurchasePayload:
    wallet: Wallet = strawberry.field(description="The balance after the purchase.")
    plan: Plan | None = strawberry.field(description="The user's plan after it; null without one.")
    purchase: Purchase | None = strawberry.field(description="The charge verified; null for a restore.")
