"""What every store adapter (apple.py, google.py, local.py) hands to the purchase services.

An adapter only verifies and translates: it checks the store's signature or asks the store's API, then
describes what the store says as `StoreTransaction`s (one per charge) and `StoreNotice`s (one per server
notification). It never touches the database; `apps/purchases/services.py` decides what to grant.

Adapters raise `apps.core.errors.InvalidReceipt` for anything that does not verify and
`apps.core.errors.StoreUnavailable` when the store cannot be reached (retryable). Notification endpoints
raise `NotificationRejected` for a push that is not the store's (the view answers 4xx).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Environment(enum.StrEnum):
    PRODUCTION = "production"
    SANDBOX = "sandbox"  # App Store sandbox / TestFlight, Google Play license testers
    LOCAL = "local"  # the embedded mode's local test store (apps/purchases/stores/local.py)


class SubscriptionState(enum.StrEnum):
    """A plan's state as the store reports it (RevenueCat's vocabulary)."""

    ACTIVE = "active"
    GRACE_PERIOD = "grace_period"  # payment failed, the store still grants access until grace_until
    BILLING_RETRY = "billing_retry"  # payment failed, no access, the store keeps retrying (Google: on hold)
    PAUSED = "paused"
    EXPIRED = "expired"
    REVOKED = "revoked"  # refunded or revoked by the store


class ProductType(enum.StrEnum):
    CONSUMABLE = "consumable"
    SUBSCRIPTION = "subscription"


@dataclass(frozen=True)
class StoreTransaction:
    """One charge the store made (a pack bought, a plan's first period, one renewal).

    `transaction_id` identifies the charge: credits are granted once per (platform, transaction_id).
    `original_id` identifies the purchase across renewals (App Store originalTransactionId; Google Play's
    purchase token, which also names a one-time purchase). `account_token` is the user id the app bound
    the purchase to (appAccountToken / obfuscatedExternalAccountId), None when the app set none.
    """

    platform: str  # apps.accounts.models.Platform value: "IOS" | "ANDROID"
    environment: Environment
    transaction_id: str
    original_id: str
    store_product_id: str
    product_type: ProductType
    purchased_at: datetime
    account_token: str | None = None
    quantity: int = 1
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revocation_reason: str = ""
    # Subscriptions only: the state after this transaction, as the store reports it.
    state: SubscriptionState | None = None
    will_renew: bool | None = None
    grace_until: datetime | None = None
    # Google Play: the purchase token to acknowledge or consume, and the token this one replaced (upgrade,
    # downgrade, resubscribe), whose plan ends here.
    purchase_token: str = ""
    linked_purchase_token: str = ""
    acknowledged: bool = True
    raw: dict[str, Any] = field(default_factory=dict)  # the decoded, verified payload, for admin


@dataclass(frozen=True)
class StoreNotice:
    """One server notification (App Store Server Notification V2, Play RTDN, local test store)."""

    platform: str
    notification_id: str  # unique per notification (notificationUUID / Pub/Sub messageId): replays dedupe
    type: str
    subtype: str = ""
    environment: Environment = Environment.PRODUCTION
    transactions: tuple[StoreTransaction, ...] = ()
    # Google's voided purchases name only an order: its transaction id and purchase token.
    voided_transaction_ids: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict)


class NotificationRejected(Exception):
    """A notification that is not the store's (bad signature, wrong audience, another app): answer 4xx,
    the store will not redeliver it and nothing changes."""

    def __init__(self, reason: str, *, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
