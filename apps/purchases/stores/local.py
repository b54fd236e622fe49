"""The local test store: purchases without Apple or Google, for the embedded mode's demo and for tests.

A receipt is `local-test:<store product id>:<any text you choose>`; anyone can write one, which is why
only a development setting turns this store on (PURCHASES_LOCAL_TEST_STORE) and production refuses to
start with it (apps/core/checks.py). The same receipt sent again is the same transaction: it grants once.

Its notifications (POST /webhooks/local-test-store, JSON) play the stores' server notifications:
`{"type": "REFUND" | "DID_RENEW" | "EXPIRED" | "DID_CHANGE_RENEWAL_STATUS", "receipt": "...",
"period": 2, "id": "..."}`. A renewal is the transaction `<receipt>#<period>`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from apps.core.errors import InvalidReceipt

from . import Environment, NotificationRejected, ProductType, StoreNotice, StoreTransaction, SubscriptionState

PREFIX = "local-test:"
PERIOD = timedelta(days=30)
NOTIFICATION_TYPES = ("REFUND", "DID_RENEW", "EXPIRED", "DID_CHANGE_RENEWAL_STATUS")


def is_enabled() -> bool:
    return bool(settings.PURCHASES_LOCAL_TEST_STORE)


def is_local_receipt(receipt: str | None) -> bool:
    return bool(receipt) and receipt.startswith(PREFIX) and is_enabled()


def _parse(receipt: str) -> tuple[str, str]:
    parts = receipt[len(PREFIX) :].split(":", 1)
    if len(parts) != 2 or not parts[0] or not parts[1] or len(receipt) > 500:
        raise InvalidReceipt(
            "A local test receipt reads `local-test:<store product id>:<any text>`, at most 500 characters."
        )
    return parts[0], parts[1]


def store_product_id(receipt: str) -> str:
    """The store product id a local receipt names (InvalidReceipt when it is not one)."""
    return _parse(receipt)[0]


def verify(receipt: str, *, platform: str, product_type: ProductType) -> StoreTransaction:
    """The transaction a local receipt stands for: a pack, or a plan's first 30-day period."""
    return _transaction(receipt, platform=platform, product_type=product_type, period=1)


def _transaction(
    receipt: str,
    *,
    platform: str,
    product_type: ProductType,
    period: int,
    state: SubscriptionState | None = None,
    will_renew: bool | None = None,
    revoked: bool = False,
) -> StoreTransaction:
    store_product_id, _ = _parse(receipt)
    now = timezone.now()
    subscription = product_type == ProductType.SUBSCRIPTION
    if subscription and state is None:
        state = SubscriptionState.REVOKED if revoked else SubscriptionState.ACTIVE
    return StoreTransaction(
        platform=platform,
        environment=Environment.LOCAL,
        transaction_id=receipt if period == 1 else f"{receipt}#{period}",
        original_id=receipt,
        store_product_id=store_product_id,
        product_type=product_type,
        purchased_at=now,
        expires_at=now + PERIOD if subscription and state != SubscriptionState.EXPIRED else None,
        revoked_at=now if revoked else None,
        revocation_reason="refunded by the local test store" if revoked else "",
        state=state,
        will_renew=(will_renew if will_renew is not None else True) if subscription else None,
        purchase_token=receipt,
        raw={"store": "local-test", "receipt": receipt, "period": period},
    )


def parse_notification(body: bytes, *, product_type_of) -> StoreNotice:
    """A local notification. `product_type_of(platform, store_product_id)` says whether the receipt's
    product is a plan (the caller knows the catalogue; this module does not touch the database)."""
    try:
        data = json.loads(body)
        kind = data["type"]
        receipt = data["receipt"]
        platform = data.get("platform", "IOS")
        period = int(data.get("period", 1))
    except (ValueError, KeyError, TypeError):
        raise NotificationRejected(
            'Send JSON {"type": "REFUND", "receipt": "local-test:...", "platform": "IOS"}.'
        ) from None
    if kind not in NOTIFICATION_TYPES or not isinstance(receipt, str) or not receipt.startswith(PREFIX):
        raise NotificationRejected(f"type is one of {', '.join(NOTIFICATION_TYPES)}; receipt a local one.")
    if platform not in ("IOS", "ANDROID") or not 1 <= period <= 1000:
        raise NotificationRejected("platform is IOS or ANDROID; period a number from 1.")
    try:
        store_product_id, _ = _parse(receipt)
    except InvalidReceipt as exc:
        raise NotificationRejected(exc.message) from None
    product_type = product_type_of(platform, store_product_id)
    options: dict = {"period": period}
    if kind == "REFUND":
        options["revoked"] = True
    elif kind == "EXPIRED":
        options["state"] = SubscriptionState.EXPIRED
        options["will_renew"] = False
    elif kind == "DID_CHANGE_RENEWAL_STATUS":
        options["will_renew"] = bool(data.get("will_renew", False))
    notification_id = str(data.get("id") or hashlib.sha256(body).hexdigest()[:40])
    return StoreNotice(
        platform=platform,
        notification_id=notification_id,
        type=kind,
        environment=Environment.LOCAL,
        transactions=(_transaction(receipt, platform=platform, product_type=product_type, **options),),
        raw=data,
    )
