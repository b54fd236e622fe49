from __future__ import annotations

import strawberry
from asgiref.sync import sync_to_async

from apps.purchases.selectors import products_on_sale

from ..enums import Platform
from .types import Product


def _products(platform: str) -> list[Product]:
    return [Product.of(product, platform=platform) for product in products_on_sale(platform=platform)]


@strawberry.type
class PurchaseQueries:
    @strawberry.field(description="What the paywall sells on this platform, in display order.")
    async def products(self, platform: Platform) -> list[Product]:  # type: ignore[valid-type]
        return await sync_to_async(_products)(platform.value)
