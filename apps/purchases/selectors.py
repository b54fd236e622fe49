"""Reads of purchases: the paywall's catalogue and a user's plan."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import Platform

from .models import Product, Subscription
from .stores import SubscriptionState

# A plan in billing retry grants nothing but is shown, so that the app can ask for a new payment method.
SHOWN_STATES = (SubscriptionState.ACTIVE, SubscriptionState.GRACE_PERIOD, SubscriptionState.BILLING_RETRY)


def products_on_sale(*, platform: str) -> QuerySet[Product]:
    """What the paywall offers on `platform`: active, in its sale window, with an id in that store."""
    field = "apple_product_id" if platform == Platform.IOS else "google_product_id"
    return Product.objects.on_sale().exclude(**{field: ""}).order_by("display_order", "credits")


def plan_of(*, user) -> Subscription | None:
    """The user's current plan: the highest level that grants access, else one waiting on a payment."""
    if user is None or not user.is_authenticated:
        return None
    candidates = (
        Subscription.objects.filter(user=user, state__in=SHOWN_STATES)
        .select_related("product")
        .order_by("-product__level", "-expires_at")
    )
    plans = list(candidates[:10])
    granting = [plan for plan in plans if plan.grants_access]
    if granting:
        return granting[0]
    waiting = [plan for plan in plans if plan.state == SubscriptionState.BILLING_RETRY]
    return waiting[0] if waiting else None
