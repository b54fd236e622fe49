"""Google Play: purchase tokens checked with the Android Publisher API, Real-time Developer Notifications
received by Pub/Sub push.

A Play purchase token proves nothing by itself (it is not signed for us): the only source of truth is
Google's API, asked with the service account of `GOOGLE_PLAY_CREDENTIALS` (linked to the app in the Play
Console). google-auth signs in with it and keeps the access token fresh; the `AuthorizedSession` is made
once per process and dropped when a GOOGLE_PLAY_ setting changes.

- One-time products (the credit packs) are read with `purchases.productsv2`, subscriptions with
  `purchases.subscriptionsv2`; each answer becomes one `StoreTransaction` (see apps/purchases/stores).
- `acknowledge()` consumes a pack (which also acknowledges it, and lets the user buy the pack again) or
  acknowledges a subscription: Google refunds a purchase nobody acknowledged within three days.
- Notifications arrive as Pub/Sub pushes. `authenticate_push()` checks the OIDC token Pub/Sub signs (with
  Google's published certificates, through google-auth); `parse_push()` reads the envelope. A notification
  says only that something changed, so the purchase is fetched again and the notice carries what Google
  says now.

Errors: `InvalidReceipt` when Google does not know the token for this app or the purchase grants nothing
(pending, cancelled, another product); `StoreUnavailable` when Google cannot be asked (timeouts, 429, 5xx,
our own credentials refused, an answer we cannot read), which the caller may retry.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import json
import logging
import threading
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import cachecontrol
import google.auth.exceptions
import google.auth.jwt
import google.auth.transport.requests
import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils import timezone
from google.oauth2 import id_token, service_account

from apps.core.errors import InvalidReceipt, StoreUnavailable

from . import Environment, NotificationRejected, ProductType, StoreNotice, StoreTransaction, SubscriptionState

logger = logging.getLogger(__name__)

PLATFORM = "ANDROID"
SCOPE = "https://www.googleapis.com/auth/androidpublisher"
PURCHASES_URL = "https://androidpublisher.googleapis.com/androidpublisher/v3/applications/{package}/purchases"
# Real tokens are a few hundred characters; anything longer is refused before Google is asked.
TOKEN_MAX_BYTES = 4096
# Pub/Sub's OIDC tokens are about 1 KB and an RTDN envelope well under 2 KB.
PUSH_TOKEN_MAX_LENGTH = 16_384
PUSH_BODY_MAX_BYTES = 65_536
# Leeway for the push token's iat/exp against our clock.
PUSH_CLOCK_SKEW_SECONDS = 10
# Retry-After beyond this is not believed (an hour); without one, callers retry after DEFAULT_RETRY_AFTER.
MAX_RETRY_AFTER_SECONDS = 3600
DEFAULT_RETRY_AFTER_SECONDS = 30

ACKNOWLEDGED = "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"
CONSUMED = "CONSUMPTION_STATE_CONSUMED"

# Google's documented notification numbers (developer.android.com/google/play/billing/rtdn-reference).
SUBSCRIPTION_NOTIFICATIONS = {
    1: "SUBSCRIPTION_RECOVERED",
    2: "SUBSCRIPTION_RENEWED",
    3: "SUBSCRIPTION_CANCELED",
    4: "SUBSCRIPTION_PURCHASED",
    5: "SUBSCRIPTION_ON_HOLD",
    6: "SUBSCRIPTION_IN_GRACE_PERIOD",
    7: "SUBSCRIPTION_RESTARTED",
    8: "SUBSCRIPTION_PRICE_CHANGE_CONFIRMED",
    9: "SUBSCRIPTION_DEFERRED",
    10: "SUBSCRIPTION_PAUSED",
    11: "SUBSCRIPTION_PAUSE_SCHEDULE_CHANGED",
    12: "SUBSCRIPTION_REVOKED",
    13: "SUBSCRIPTION_EXPIRED",
    17: "SUBSCRIPTION_ITEMS_CHANGED",
    18: "SUBSCRIPTION_CANCELLATION_SCHEDULED",
    19: "SUBSCRIPTION_PRICE_CHANGE_UPDATED",
    20: "SUBSCRIPTION_PENDING_PURCHASE_CANCELED",
    22: "SUBSCRIPTION_PRICE_STEP_UP_CONSENT_UPDATED",
}
ONE_TIME_PRODUCT_NOTIFICATIONS = {1: "ONE_TIME_PRODUCT_PURCHASED", 2: "ONE_TIME_PRODUCT_CANCELED"}
REFUND_TYPES = {1: "FULL_REFUND", 2: "QUANTITY_BASED_PARTIAL_REFUND"}

# SubscriptionPurchaseV2.subscriptionState -> ours; CANCELED depends on the expiry, the pending ones grant
# nothing (see _subscription_state).
SUBSCRIPTION_STATES = {
    "SUBSCRIPTION_STATE_ACTIVE": SubscriptionState.ACTIVE,
    "SUBSCRIPTION_STATE_IN_GRACE_PERIOD": SubscriptionState.GRACE_PERIOD,
    "SUBSCRIPTION_STATE_ON_HOLD": SubscriptionState.BILLING_RETRY,
    "SUBSCRIPTION_STATE_PAUSED": SubscriptionState.PAUSED,
    "SUBSCRIPTION_STATE_EXPIRED": SubscriptionState.EXPIRED,
}

NOT_A_TOKEN = "This is not a Google Play purchase token."
UNKNOWN_PURCHASE = "Google Play does not know this purchase for this app."

_lock = threading.Lock()
_api_session: google.auth.transport.requests.AuthorizedSession | None = None
_certs_session: requests.Session | None = None


def is_configured() -> bool:
    """Whether Play purchases can be verified: the app's package name and a service account are set.
    Pushes also need GOOGLE_PLAY_PUSH_AUDIENCE and GOOGLE_PLAY_PUSH_SERVICE_ACCOUNT."""
    return bool(settings.GOOGLE_PLAY_PACKAGE_NAME and settings.GOOGLE_PLAY_CREDENTIALS)


# --- Sessions ------------------------------------------------------------------------------------------


def _api() -> google.auth.transport.requests.AuthorizedSession:
    """The Android Publisher session of this process: one access token, refreshed by google-auth."""
    global _api_session
    with _lock:
        if _api_session is None:
            _api_session = _authorized_session()
        return _api_session


def _authorized_session() -> google.auth.transport.requests.AuthorizedSession:
    if not is_configured():
        raise ImproperlyConfigured(
            "Google Play is not configured: set GOOGLE_PLAY_PACKAGE_NAME and GOOGLE_PLAY_CREDENTIALS "
            "(the path to the JSON key of a service account linked to the app in the Play Console)."
        )
    try:
        credentials = service_account.Credentials.from_service_account_file(
            settings.GOOGLE_PLAY_CREDENTIALS, scopes=[SCOPE]
        )
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"GOOGLE_PLAY_CREDENTIALS={settings.GOOGLE_PLAY_CREDENTIALS!r} is not a readable "
            f"service-account JSON: {exc}"
        ) from exc
    return google.auth.transport.requests.AuthorizedSession(credentials)


def _certs() -> requests.Session:
    """The session that fetches Google's OAuth 2.0 certificates for push tokens. google-auth fetches them
    on every verification; cachecontrol (firebase-admin's dependency, which does the same for Firebase
    tokens) keeps them for as long as Google's Cache-Control allows, so a push costs no extra request."""
    global _certs_session
    with _lock:
        if _certs_session is None:
            _certs_session = cachecontrol.CacheControl(requests.Session())
        return _certs_session


def _reset() -> None:
    global _api_session, _certs_session
    with _lock:
        for session in (_api_session, _certs_session):
            if session is not None:
                session.close()
        _api_session = _certs_session = None


@receiver(setting_changed)
def _reset_when_play_settings_change(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("GOOGLE_PLAY_"):
        _reset()


# --- Verifying purchases -------------------------------------------------------------------------------


def verify_purchase(purchase_token: str, product_id: str, product_type: ProductType) -> StoreTransaction:
    """What Google says about this purchase of `product_id` now, as a transaction of this app.

    Only a purchase that is paid grants: a pending payment, a cancelled purchase, a pending subscription,
    another product's token or a token Google does not know for our package is `InvalidReceipt`.
    """
    token = _checked_token(purchase_token)
    if product_type == ProductType.CONSUMABLE:
        return _product_transaction(_get(_product_url(token)), token, product_id, required=True)
    return _subscription_transaction(_get(_subscription_url(token)), token, product_id, required=True)


def acknowledge(transaction: StoreTransaction) -> None:
    """Tells Google the purchase was delivered, so it is not refunded after three days: a pack is consumed
    (which acknowledges it and lets the user buy it again), a subscription acknowledged.

    Nothing is sent for a transaction Google already reported acknowledged. Google refuses to consume or
    acknowledge twice; when it refuses, the purchase is read again, and done is done.
    """
    if transaction.acknowledged:
        return
    token = _checked_token(transaction.purchase_token)
    product = _quote(transaction.store_product_id)
    body: dict[str, Any] | None = None  # consume takes no body
    if transaction.product_type == ProductType.CONSUMABLE:
        url = f"{_purchases_url()}/products/{product}/tokens/{_quote(token)}:consume"
    else:
        url = f"{_purchases_url()}/subscriptions/{product}/tokens/{_quote(token)}:acknowledge"
        body = {}  # a SubscriptionPurchasesAcknowledgeRequest without developer payload
    try:
        _call("POST", url, json=body)
    except InvalidReceipt:
        if not _already_acknowledged(transaction, token):
            raise


def _already_acknowledged(transaction: StoreTransaction, token: str) -> bool:
    if transaction.product_type == ProductType.CONSUMABLE:
        answer = _get(_product_url(token))
        return any(
            _offer(item).get("consumptionState") == CONSUMED
            for item in _line_items(answer, "productLineItem")
            if item.get("productId") == transaction.store_product_id
        )
    return _get(_subscription_url(token)).get("acknowledgementState") == ACKNOWLEDGED


def _product_transaction(
    answer: dict[str, Any], token: str, product_id: str | None, *, required: bool
) -> StoreTransaction:
    """A ProductPurchaseV2 as a transaction. `acknowledged` means consumed when Google reports the
    consumption state: a pack the app acknowledged but never consumed still needs `acknowledge()`, or the
    user cannot buy it again."""
    item = _line_item(_line_items(answer, "productLineItem"), product_id, required=required)
    state = _dict(answer.get("purchaseStateContext")).get("purchaseState")
    if state == "PENDING":
        raise InvalidReceipt(
            "The payment for this purchase is still pending at Google Play. "
            "Your credits are added as soon as it completes."
        )
    if state == "CANCELLED":
        raise InvalidReceipt("This purchase was cancelled at Google Play.")
    if state != "PURCHASED":
        raise _unexpected(f"purchaseState {state!r}")
    offer = _offer(item)
    consumption = offer.get("consumptionState")
    quantity = offer.get("quantity", 1)
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
        raise _unexpected(f"quantity {quantity!r}")
    return StoreTransaction(
        platform=PLATFORM,
        environment=Environment.SANDBOX if "testPurchaseContext" in answer else Environment.PRODUCTION,
        transaction_id=_order_id(answer.get("orderId"), token),
        original_id=token,
        store_product_id=item["productId"],
        product_type=ProductType.CONSUMABLE,
        purchased_at=_optional_time(answer.get("purchaseCompletionTime"), "purchaseCompletionTime"),
        account_token=_account_token(answer.get("obfuscatedExternalAccountId")),
        quantity=quantity,
        purchase_token=token,
        acknowledged=(
            consumption == CONSUMED if consumption else answer.get("acknowledgementState") == ACKNOWLEDGED
        ),
        raw=answer,
    )


def _subscription_transaction(
    answer: dict[str, Any], token: str, product_id: str | None, *, required: bool
) -> StoreTransaction:
    """A SubscriptionPurchaseV2 as the transaction of its current period.

    Each renewal is its own order (GPA.x, GPA.x..0, GPA.x..1): the line item's latest successful order is
    the charge that pays for the period Google reports. The deprecated `latestOrderId` is not used: it may
    name a renewal that has not been paid (grace period, on hold). Google gives no time for a renewal's
    charge, so `purchased_at` is when the subscription started.
    """
    state_name = answer.get("subscriptionState")
    if state_name == "SUBSCRIPTION_STATE_PENDING":
        raise InvalidReceipt(
            "The payment for this subscription is still pending at Google Play. "
            "It starts as soon as the payment completes."
        )
    if state_name == "SUBSCRIPTION_STATE_PENDING_PURCHASE_CANCELED":
        raise InvalidReceipt("The pending payment for this subscription was cancelled at Google Play.")
    item = _line_item(_line_items(answer, "lineItems"), product_id, required=required)
    expires_at = _time(item.get("expiryTime"), "expiryTime")
    auto_renew = _dict(item.get("autoRenewingPlan")).get("autoRenewEnabled") is True
    if state_name == "SUBSCRIPTION_STATE_CANCELED":
        # Cancelled by the user (or Google, or us): it keeps its access until the paid period ends.
        state = SubscriptionState.ACTIVE if expires_at > timezone.now() else SubscriptionState.EXPIRED
        will_renew = False
    elif isinstance(state_name, str) and state_name in SUBSCRIPTION_STATES:
        state = SUBSCRIPTION_STATES[state_name]
        will_renew = auto_renew and state != SubscriptionState.EXPIRED
    else:
        raise _unexpected(f"subscriptionState {state_name!r}")
    accounts = _dict(answer.get("externalAccountIdentifiers"))
    return StoreTransaction(
        platform=PLATFORM,
        environment=Environment.SANDBOX if "testPurchase" in answer else Environment.PRODUCTION,
        transaction_id=_order_id(item.get("latestSuccessfulOrderId"), token),
        original_id=token,
        store_product_id=item["productId"],
        product_type=ProductType.SUBSCRIPTION,
        purchased_at=_optional_time(answer.get("startTime"), "startTime"),
        account_token=_account_token(accounts.get("obfuscatedExternalAccountId")),
        expires_at=expires_at,
        state=state,
        will_renew=will_renew,
        grace_until=expires_at if state == SubscriptionState.GRACE_PERIOD else None,
        purchase_token=token,
        linked_purchase_token=_string(answer.get("linkedPurchaseToken")),
        acknowledged=answer.get("acknowledgementState") == ACKNOWLEDGED,
        raw=answer,
    )


def _checked_token(token: object) -> str:
    """Refuses what cannot be a purchase token before Google is asked (and before it lands in a URL or a
    log line): empty, longer than TOKEN_MAX_BYTES, or with control, format or unpaired surrogate
    characters."""
    if not isinstance(token, str) or not token or not token.isprintable():
        raise InvalidReceipt(NOT_A_TOKEN)
    if len(token.encode()) > TOKEN_MAX_BYTES:
        raise InvalidReceipt(NOT_A_TOKEN)
    return token


def _order_id(order_id: object, token: str) -> str:
    """Google's order id; some test purchases have none, and get one derived from the token, the same on
    every read (so a grant keyed by it happens once)."""
    if isinstance(order_id, str) and order_id:
        return order_id
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:40]


def _line_items(answer: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = answer.get(key)
    if (
        not isinstance(items, list)
        or not items
        or not all(isinstance(item, dict) and isinstance(item.get("productId"), str) for item in items)
    ):
        raise _unexpected(f"{key} {items!r:.200}")
    return items


def _line_item(items: list[dict[str, Any]], product_id: str | None, *, required: bool) -> dict[str, Any]:
    """The line item of `product_id`. A notification may name no product (or a stale one): then the first,
    as we sell one product per purchase."""
    for item in items:
        if item["productId"] == product_id:
            return item
    if required:
        raise InvalidReceipt("This purchase is for another product than the one being bought.")
    return items[0]


def _offer(item: dict[str, Any]) -> dict[str, Any]:
    return _dict(item.get("productOfferDetails"))


def _account_token(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""


def _time(value: object, field: str) -> datetime:
    """An RFC 3339 timestamp of Google's (`Z`, up to nanoseconds), as an aware datetime."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None:
                return moment
    raise _unexpected(f"{field} {value!r:.80}")


def _optional_time(value: object, field: str) -> datetime:
    """When the purchase completed or the subscription started. Google may leave it out; the moment we
    first see the purchase is then close enough, and refusing a paid purchase over it would not be."""
    return timezone.now() if value is None else _time(value, field)


def _unexpected(what: str) -> StoreUnavailable:
    """An answer that is not what Google documents: logged loudly, and retryable for the caller (nothing
    is granted on an answer we cannot read)."""
    logger.error("Google Play answered something unexpected: %s", what)
    return StoreUnavailable()


# --- HTTP ----------------------------------------------------------------------------------------------


def _purchases_url() -> str:
    return PURCHASES_URL.format(package=_quote(settings.GOOGLE_PLAY_PACKAGE_NAME))


def _product_url(token: str) -> str:
    return f"{_purchases_url()}/productsv2/tokens/{_quote(token)}"


def _subscription_url(token: str) -> str:
    return f"{_purchases_url()}/subscriptionsv2/tokens/{_quote(token)}"


def _quote(segment: str) -> str:
    """One path segment, every reserved character escaped (a token with `/` or `?` stays one segment)."""
    return urllib.parse.quote(segment, safe="")


def _get(url: str) -> dict[str, Any]:
    response = _call("GET", url)
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise _unexpected(f"HTTP {response.status_code} body {response.text!r:.200}")
    return answer


def _call(method: str, url: str, **kwargs: Any) -> requests.Response:
    """One Android Publisher request, its failures sorted into InvalidReceipt (the token's fault) and
    StoreUnavailable (ours or Google's: retryable).

    400 and 404 are what Google answers for a token that is made up or belongs to another app, 410 for a
    purchase too old to look up. 401 and 403 mean our service account is refused (key revoked, not linked
    to the app in the Play Console, API not enabled): no user can fix that, so it is logged as an error
    and retryable until someone does.
    """
    api = _api()
    try:
        response = api.request(method, url, timeout=settings.STORE_HTTP_TIMEOUT_SECONDS, **kwargs)
    except google.auth.exceptions.RefreshError as exc:
        logger.error("Google refused the Play service account's sign-in: %s", exc)
        raise StoreUnavailable() from exc
    except (requests.RequestException, google.auth.exceptions.TransportError) as exc:
        # The exception's name only: requests' messages quote the URL, and with it the purchase token.
        logger.warning("Google Play did not answer %s %s: %s", method, _logged(url), type(exc).__name__)
        raise StoreUnavailable() from exc
    status = response.status_code
    if 200 <= status < 300:
        return response
    logged = (method, _logged(url), status, _error_message(response))
    if status in (400, 404):
        logger.info("Google Play refused %s %s: HTTP %s %s", *logged)
        raise InvalidReceipt(UNKNOWN_PURCHASE)
    if status == 410:
        logger.info("Google Play refused %s %s: HTTP %s %s", *logged)
        raise InvalidReceipt("Google Play no longer keeps this purchase: it ended too long ago.")
    if status == 429 or status >= 500:
        logger.warning("Google Play could not answer %s %s: HTTP %s %s", *logged)
        raise StoreUnavailable(retry_after_seconds=_retry_after(response))
    if status in (401, 403):
        logger.error("Google Play refused our service account on %s %s: HTTP %s %s", *logged)
    else:
        logger.error("Google Play answered %s %s with an unexpected HTTP %s %s", *logged)
    raise StoreUnavailable()


def _logged(url: str) -> str:
    """A request's URL without the purchase token, for the log."""
    return url.split("/tokens/")[0]


def _error_message(response: requests.Response) -> str:
    try:
        error = response.json().get("error", {})
        return str(error.get("message", ""))[:200]
    except (ValueError, AttributeError):
        return response.text[:200]


def _retry_after(response: requests.Response) -> int:
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return min(max(int(value), 1), MAX_RETRY_AFTER_SECONDS)
    return DEFAULT_RETRY_AFTER_SECONDS


# --- Real-time Developer Notifications -----------------------------------------------------------------


def authenticate_push(authorization_header: str | None) -> dict[str, Any]:
    """The claims of the OIDC token Pub/Sub put on a push (`Authorization: Bearer <jwt>`), checked by
    google-auth against Google's certificates (signature, issuer, expiry, our audience), then the
    service account the push subscription signs as, with a verified email.

    Anything else is `NotificationRejected`: 401 for a missing or invalid token, 403 for a valid token of
    another account. Failing to fetch Google's certificates is not the push's fault: `StoreUnavailable`,
    so the view answers 503 and Pub/Sub delivers the message again.
    """
    audience = settings.GOOGLE_PLAY_PUSH_AUDIENCE
    account = settings.GOOGLE_PLAY_PUSH_SERVICE_ACCOUNT
    if not audience or not account:
        raise ImproperlyConfigured(
            "Google Play notifications are not configured: set GOOGLE_PLAY_PUSH_AUDIENCE (the audience "
            "of the Pub/Sub push subscription) and GOOGLE_PLAY_PUSH_SERVICE_ACCOUNT (the account it "
            "signs as)."
        )
    scheme, _, token = (authorization_header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > PUSH_TOKEN_MAX_LENGTH:
        raise NotificationRejected("A Pub/Sub push needs an OIDC bearer token.", status=401)
    try:
        google.auth.jwt.decode_header(token)  # garbage is refused without fetching certificates
    except ValueError:
        raise NotificationRejected("The push token is not a JWT.", status=401) from None
    request = google.auth.transport.requests.Request(_certs())
    try:
        claims = id_token.verify_oauth2_token(
            token,
            functools.partial(request, timeout=settings.STORE_HTTP_TIMEOUT_SECONDS),
            audience=audience,
            clock_skew_in_seconds=PUSH_CLOCK_SKEW_SECONDS,
        )
    except google.auth.exceptions.TransportError as exc:
        logger.warning("Google's OAuth 2.0 certificates could not be fetched: %s", exc)
        raise StoreUnavailable("Google's certificates could not be fetched.") from exc
    except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
        # The reason, not the token: the message may quote the token, so it is cut short.
        logger.info("refused a Pub/Sub push token: %s: %.160s", type(exc).__name__, exc)
        raise NotificationRejected(
            "The push token does not verify (signature, issuer, audience or expiry).", status=401
        ) from None
    if claims.get("email") != account or claims.get("email_verified") is not True:
        logger.warning("refused a Pub/Sub push signed for %r", claims.get("email"))
        raise NotificationRejected("The push token is not our push subscription's account.", status=403)
    return dict(claims)


def parse_push(body: bytes) -> StoreNotice:
    """A Pub/Sub push of a Play DeveloperNotification, as a notice (call `authenticate_push` first).

    Subscription notifications and ONE_TIME_PRODUCT_PURCHASED carry no state, so the purchase is fetched
    again and the notice carries it; a token Google does not know gives a notice without transactions and
    the reason in raw["error"] (delivering it again would not help). `StoreUnavailable` propagates, so
    Pub/Sub delivers it again. A voided purchase names only its order: `voided_transaction_ids`.

    raw holds Pub/Sub's message_id, publish_time and subscription, the decoded notification, and the
    purchase_token it names.
    """
    if len(body) > PUSH_BODY_MAX_BYTES:
        raise NotificationRejected("The push body is too large.", status=413)
    envelope = _json_object(body, "The push body is not a Pub/Sub push envelope.")
    message = envelope.get("message")
    if not isinstance(message, dict):
        raise NotificationRejected("The push body has no Pub/Sub message.")
    message_id = message.get("messageId") or message.get("message_id")
    data = message.get("data")
    if not isinstance(message_id, str) or not message_id or not isinstance(data, str):
        raise NotificationRejected("The Pub/Sub message has no id or no data.")
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise NotificationRejected("The Pub/Sub message data is not base64.") from None
    notification = _json_object(decoded, "The Pub/Sub message is not a Play developer notification.")
    package = settings.GOOGLE_PLAY_PACKAGE_NAME
    if not package:
        raise ImproperlyConfigured("Google Play is not configured: set GOOGLE_PLAY_PACKAGE_NAME.")
    if notification.get("packageName") != package:
        raise NotificationRejected("The notification is for another app.")
    event_time = _event_time(notification.get("eventTimeMillis"))
    raw: dict[str, Any] = {
        "message_id": message_id,
        "publish_time": _string(message.get("publishTime") or message.get("publish_time")),
        "subscription": _string(envelope.get("subscription")),
        "notification": notification,
    }
    notice = functools.partial(StoreNotice, platform=PLATFORM, notification_id=message_id, raw=raw)

    if "subscriptionNotification" in notification:
        number, token = _kind(notification["subscriptionNotification"], raw)
        name = SUBSCRIPTION_NOTIFICATIONS.get(number, f"SUBSCRIPTION_NOTIFICATION_{number}")
        product_id = _string(notification["subscriptionNotification"].get("subscriptionId")) or None
        transaction = _fetch(
            raw,
            lambda: _subscription_transaction(_get_subscription(token), token, product_id, required=False),
        )
        if transaction is None:
            return notice(type=name)
        if name == "SUBSCRIPTION_REVOKED" and transaction.state == SubscriptionState.EXPIRED:
            transaction = dataclasses.replace(
                transaction,
                state=SubscriptionState.REVOKED,
                revoked_at=event_time,
                revocation_reason=name,
                will_renew=False,
            )
        return notice(type=name, environment=transaction.environment, transactions=(transaction,))

    if "oneTimeProductNotification" in notification:
        number, token = _kind(notification["oneTimeProductNotification"], raw)
        name = ONE_TIME_PRODUCT_NOTIFICATIONS.get(number, f"ONE_TIME_PRODUCT_NOTIFICATION_{number}")
        if name != "ONE_TIME_PRODUCT_PURCHASED":
            return notice(type=name)
        sku = _string(notification["oneTimeProductNotification"].get("sku")) or None
        transaction = _fetch(
            raw, lambda: _product_transaction(_get_product(token), token, sku, required=False)
        )
        if transaction is None:
            return notice(type=name)
        return notice(type=name, environment=transaction.environment, transactions=(transaction,))

    if "voidedPurchaseNotification" in notification:
        voided = notification["voidedPurchaseNotification"]
        token = voided.get("purchaseToken") if isinstance(voided, dict) else None
        if not isinstance(token, str) or not token:
            raise NotificationRejected("The voided purchase notification names no purchase.")
        raw["purchase_token"] = token
        refund_type = voided.get("refundType")
        return notice(
            type="VOIDED_PURCHASE",
            subtype=REFUND_TYPES.get(refund_type, "") if isinstance(refund_type, int) else "",
            voided_transaction_ids=(_order_id(voided.get("orderId"), token),),
        )

    if "testNotification" in notification:
        return notice(type="TEST", environment=Environment.SANDBOX)
    # A kind Google added after this was written: acknowledged and kept for admin, nothing to do.
    return notice(type="UNKNOWN")


def _get_product(token: str) -> dict[str, Any]:
    return _get(_product_url(_checked_token(token)))


def _get_subscription(token: str) -> dict[str, Any]:
    return _get(_subscription_url(_checked_token(token)))


def _fetch(raw: dict[str, Any], read: Callable[[], StoreTransaction]) -> StoreTransaction | None:
    """The purchase a notification names, read again; None (the reason in raw) when it grants nothing."""
    try:
        return read()
    except InvalidReceipt as exc:
        raw["error"] = exc.message
        return None


def _kind(kind: object, raw: dict[str, Any]) -> tuple[int, str]:
    """The notification type and purchase token of a subscription or one-time product notification."""
    if not isinstance(kind, dict):
        raise NotificationRejected("The notification is not an object.")
    number, token = kind.get("notificationType"), kind.get("purchaseToken")
    if not isinstance(number, int) or isinstance(number, bool) or not isinstance(token, str) or not token:
        raise NotificationRejected("The notification has no type or no purchase token.")
    raw["purchase_token"] = token
    return number, token


def _json_object(data: bytes, reason: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise NotificationRejected(reason) from None
    if not isinstance(value, dict):
        raise NotificationRejected(reason)
    return value


def _event_time(value: object) -> datetime:
    """eventTimeMillis: milliseconds since the epoch, a string in JSON (int64)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            pass
    raise NotificationRejected("The notification has no valid eventTimeMillis.")
