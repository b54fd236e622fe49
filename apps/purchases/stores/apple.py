"""The App Store adapter: StoreKit 2 signed transactions, App Store Server Notifications V2, and the App Store
Server API's transaction history, all verified with Apple's app-store-server-library.

The library does the verification we must not get wrong by hand: the `x5c` chain up to the configured root
(Apple Root CA - G3) under OpenSSL's X509_STRICT, Apple's marker extensions on the leaf and intermediate,
OCSP revocation when `APPLE_ONLINE_CHECKS` is on, the ES256 signature, and then the bundle id, the app's
Apple id (notifications) and the environment. This module only chooses which verifier to ask, turns what it
says into `StoreTransaction` / `StoreNotice`, and maps its failures onto our errors.

One verifier per environment: sandbox (TestFlight, App Review) data is verified as authentically as
production data and reported as `Environment.SANDBOX`; whether it grants is the services' policy
(`APPLE_ALLOW_SANDBOX`). The verifier is picked by the payload's own, unverified `environment` claim, which
is safe because that verifier checks the claim again after the signature: a payload that lies about its
environment fails. Xcode and local-testing data (which the library accepts unsigned) are refused outright.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import jwt
import requests
from appstoreserverlibrary.api_client import (
    APIError,
    APIException,
    AppStoreServerAPIClient,
    GetTransactionHistoryVersion,
)
from appstoreserverlibrary.models.AutoRenewStatus import AutoRenewStatus
from appstoreserverlibrary.models.Environment import Environment as AppleEnvironment
from appstoreserverlibrary.models.JWSRenewalInfoDecodedPayload import JWSRenewalInfoDecodedPayload
from appstoreserverlibrary.models.JWSTransactionDecodedPayload import JWSTransactionDecodedPayload
from appstoreserverlibrary.models.Status import Status
from appstoreserverlibrary.models.TransactionHistoryRequest import Order, TransactionHistoryRequest
from appstoreserverlibrary.models.Type import Type
from appstoreserverlibrary.signed_data_verifier import (
    SignedDataVerifier,
    VerificationException,
    VerificationStatus,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils import timezone

from apps.core.errors import InvalidReceipt, StoreUnavailable
from apps.purchases.stores import (
    Environment,
    NotificationRejected,
    ProductType,
    StoreNotice,
    StoreTransaction,
    SubscriptionState,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

PLATFORM = "IOS"
# Apple's signed data is a few KB (three certificates and the claims); anything far longer is refused before
# it is decoded, so a client cannot make the server parse megabytes.
SIGNED_DATA_MAX_LENGTH = 65_536
# Apple's transaction ids are decimal strings. The library puts them into the API's URL paths unescaped.
TRANSACTION_ID = re.compile(r"[0-9]{1,32}")

_APPLE_ENVIRONMENTS = {
    Environment.PRODUCTION: AppleEnvironment.PRODUCTION,
    Environment.SANDBOX: AppleEnvironment.SANDBOX,
}
# The claim values that choose a verifier; "Xcode" and "LocalTesting" are not among them.
_ENVIRONMENT_CLAIMS = {apple.value: ours for ours, apple in _APPLE_ENVIRONMENTS.items()}
# Failures that say what is wrong; every other status means the signature or chain did not verify.
_REFUSALS = {
    VerificationStatus.INVALID_APP_IDENTIFIER: "{what} was made for another app.",
    VerificationStatus.INVALID_ENVIRONMENT: (
        "{what} does not belong to the App Store's {environment} environment."
    ),
}
_NOT_VERIFIED = "{what} does not carry a valid App Store signature."
# 404s that Apple asks us to retry (the account or purchase is not replicated yet), unlike plain "not found".
_RETRYABLE_API_ERRORS = {
    APIError.ACCOUNT_NOT_FOUND_RETRYABLE,
    APIError.APP_NOT_FOUND_RETRYABLE,
    APIError.ORIGINAL_TRANSACTION_ID_NOT_FOUND_RETRYABLE,
    APIError.GENERAL_INTERNAL_RETRYABLE,
}


class _NotVerified(Exception):
    """Why signed data did not verify: `verify_transaction` says it as `InvalidReceipt` (to the user),
    `verify_notification` as `NotificationRejected` (to Apple)."""


def is_configured() -> bool:
    """Whether the App Store is on: a bundle id to check, and a root certificate to verify against."""
    return bool(settings.APPLE_BUNDLE_ID and settings.APPLE_ROOT_CERTIFICATES)


# --- Verifiers ---------------------------------------------------------------------------------------------


@functools.cache
def _verifier(environment: Environment) -> SignedDataVerifier:
    """The verifier of one environment, kept for the process: with online checks on it caches the chains
    whose OCSP status it has checked (15 minutes), which a verifier per call would throw away."""
    if environment is Environment.PRODUCTION and settings.APPLE_APP_APPLE_ID is None:
        raise ImproperlyConfigured(
            "APPLE_APP_APPLE_ID (the app's Apple ID in App Store Connect) is needed to verify production "
            "App Store data."
        )
    return SignedDataVerifier(
        root_certificates=_root_certificates(),
        enable_online_checks=settings.APPLE_ONLINE_CHECKS,
        environment=_APPLE_ENVIRONMENTS[environment],
        bundle_id=settings.APPLE_BUNDLE_ID,
        app_apple_id=settings.APPLE_APP_APPLE_ID,
    )


def _root_certificates() -> list[bytes]:
    """The configured roots as DER, which is what the library loads; Apple publishes DER (.cer) files, and
    PEM files are accepted too so a root can sit in a secret store as text."""
    roots: list[bytes] = []
    for path in settings.APPLE_ROOT_CERTIFICATES:
        try:
            data = Path(path).read_bytes()
            if b"-----BEGIN" in data:
                certificates = x509.load_pem_x509_certificates(data)
            else:
                certificates = [x509.load_der_x509_certificate(data)]
        except (OSError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"APPLE_ROOT_CERTIFICATES: {path!r} is not a readable DER or PEM certificate: {exc}"
            ) from exc
        roots.extend(certificate.public_bytes(serialization.Encoding.DER) for certificate in certificates)
    return roots


@receiver(setting_changed)
def _reset_when_apple_settings_change(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("APPLE_"):
        _verifier.cache_clear()
        _api_client.cache_clear()


# --- Reading signed data -----------------------------------------------------------------------------------


def _unverified_claims(signed: str, what: str) -> dict[str, Any]:
    """The JWS payload before any check: to choose the verifier, and, once that verifier has passed the very
    same string, as the `raw` record of what Apple signed (the library's models drop fields they do not
    know)."""
    parts = signed.split(".") if isinstance(signed, str) and len(signed) <= SIGNED_DATA_MAX_LENGTH else []
    if len(parts) != 3 or not all(parts):
        raise _NotVerified(f"{what} is not signed App Store data.")
    try:
        return jwt.decode(signed, options={"verify_signature": False})
    except Exception as exc:  # PyJWT's DecodeError, or a RecursionError for absurdly nested JSON
        raise _NotVerified(f"{what} is not signed App Store data.") from exc


def _environment(claim: object, what: str) -> Environment:
    environment = _ENVIRONMENT_CLAIMS.get(claim) if isinstance(claim, str) else None
    if environment is None:
        raise _NotVerified(f"{what} is not from the App Store's Production or Sandbox environment.")
    return environment


def _verified(decode: Callable[[str], T], signed: str, what: str, environment: Environment) -> T:
    """`decode(signed)` (one of the verifier's methods), its failures said as `_NotVerified`, except an OCSP
    responder that did not answer: that is the store being unavailable, and worth a retry."""
    try:
        return decode(signed)
    except VerificationException as exc:
        if exc.status == VerificationStatus.RETRYABLE_VERIFICATION_FAILURE:
            raise StoreUnavailable() from exc
        reason = _REFUSALS.get(exc.status, _NOT_VERIFIED)
        raise _NotVerified(
            reason.format(what=what, environment=_APPLE_ENVIRONMENTS[environment].value)
        ) from exc
    except Exception as exc:  # the library structures the verified claims; claims it cannot read are refused
        raise _NotVerified(f"{what} has claims the App Store does not write.") from exc


def _signed_transaction(
    verifier: SignedDataVerifier, signed: str, environment: Environment, what: str
) -> tuple[JWSTransactionDecodedPayload, dict[str, Any]]:
    claims = _unverified_claims(signed, what)
    return _verified(verifier.verify_and_decode_signed_transaction, signed, what, environment), claims


def _signed_renewal_info(
    verifier: SignedDataVerifier, signed: str, environment: Environment, what: str
) -> tuple[JWSRenewalInfoDecodedPayload, dict[str, Any]]:
    claims = _unverified_claims(signed, what)
    return _verified(verifier.verify_and_decode_renewal_info, signed, what, environment), claims


# --- Translating -------------------------------------------------------------------------------------------


def _datetime(milliseconds: int | None, what: str) -> dt.datetime | None:
    if milliseconds is None:
        return None
    try:
        return dt.datetime.fromtimestamp(milliseconds / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise _NotVerified(f"{what} has a date out of range.") from exc


def _account_token(value: str | None) -> str | None:
    """The user id the app bound the purchase to. StoreKit only carries UUIDs, so anything else cannot name
    one of our users and counts as no token."""
    try:
        return str(uuid.UUID(value)) if value else None
    except ValueError:
        return None


def _revocation_reason(payload: JWSTransactionDecodedPayload) -> str:
    if payload.revocationReason is not None:
        return payload.revocationReason.name.lower()  # refunded_due_to_issue, refunded_for_other_reason
    return "" if payload.rawRevocationReason is None else f"reason {payload.rawRevocationReason}"


def _store_transaction(
    payload: JWSTransactionDecodedPayload,
    claims: dict[str, Any],
    environment: Environment,
    what: str,
    *,
    renewal: JWSRenewalInfoDecodedPayload | None = None,
    expired: bool = False,
) -> StoreTransaction:
    """One charge as `StoreTransaction`. For a subscription, the state comes from the transaction itself,
    the renewal info next to it (auto-renew, billing retry, grace period) and `expired`, which is what a
    notification or a status says beyond the dates (Apple decides when billing retry ends)."""
    if not (payload.transactionId and payload.originalTransactionId and payload.productId):
        raise _NotVerified(f"{what} names no transaction or product.")
    purchased_at = _datetime(payload.purchaseDate, what)
    if purchased_at is None:
        raise _NotVerified(f"{what} has no purchase date.")
    expires_at = _datetime(payload.expiresDate, what)
    revoked_at = _datetime(payload.revocationDate, what)
    subscription = payload.type == Type.AUTO_RENEWABLE_SUBSCRIPTION
    state: SubscriptionState | None = None
    will_renew: bool | None = None
    grace_until: dt.datetime | None = None
    if subscription:
        now = timezone.now()
        in_billing_retry = bool(renewal and renewal.isInBillingRetryPeriod)
        if renewal is not None:
            will_renew = renewal.autoRenewStatus == AutoRenewStatus.ON
            grace_until = _datetime(renewal.gracePeriodExpiresDate, what)
        if revoked_at is not None:
            state = SubscriptionState.REVOKED
        elif expired:
            state = SubscriptionState.EXPIRED
        elif in_billing_retry and grace_until is not None and grace_until > now:
            state = SubscriptionState.GRACE_PERIOD
        elif in_billing_retry:
            state = SubscriptionState.BILLING_RETRY
        elif expires_at is not None and expires_at <= now:
            state = SubscriptionState.EXPIRED
        else:
            state = SubscriptionState.ACTIVE
        if state is not SubscriptionState.GRACE_PERIOD:
            grace_until = None
    return StoreTransaction(
        platform=PLATFORM,
        environment=environment,
        transaction_id=payload.transactionId,
        original_id=payload.originalTransactionId,
        store_product_id=payload.productId,
        product_type=ProductType.SUBSCRIPTION if subscription else ProductType.CONSUMABLE,
        purchased_at=purchased_at,
        account_token=_account_token(payload.appAccountToken),
        quantity=payload.quantity or 1,
        expires_at=expires_at,
        revoked_at=revoked_at,
        revocation_reason=_revocation_reason(payload),
        state=state,
        will_renew=will_renew,
        grace_until=grace_until,
        raw=claims,
    )


# --- Signed transactions (StoreKit 2) ----------------------------------------------------------------------


def verify_transaction(signed_transaction: str) -> StoreTransaction:
    """A StoreKit 2 `Transaction.jwsRepresentation` the app sent, verified and translated.

    Anything that does not verify, whatever the string, is `InvalidReceipt` with a message the user may
    read; only an OCSP responder that does not answer (online checks) is `StoreUnavailable`.
    """
    if not is_configured():
        raise InvalidReceipt("App Store purchases are not accepted on this server.")
    what = "This transaction"
    try:
        claims = _unverified_claims(signed_transaction, what)
        environment = _environment(claims.get("environment"), what)
        verifier = _verifier(environment)
        payload = _verified(
            verifier.verify_and_decode_signed_transaction, signed_transaction, what, environment
        )
        return _store_transaction(payload, claims, environment, what)
    except _NotVerified as exc:
        logger.info("refused an App Store transaction: %s", exc)
        raise InvalidReceipt(str(exc)) from exc


# --- App Store Server Notifications V2 ---------------------------------------------------------------------


def _notification_environment(claims: dict[str, Any]) -> object:
    for part in ("data", "summary"):
        if isinstance(claims.get(part), dict):
            return claims[part].get("environment")
    return None


def verify_notification(signed_payload: str) -> StoreNotice:
    """An App Store Server Notification V2 (`signedPayload`), verified with the transaction and renewal info
    it carries, as one `StoreNotice` with at most one transaction.

    A payload that is not Apple's, or is another app's (bundle id, or app Apple id in production), is
    `NotificationRejected`; an OCSP responder that does not answer is `StoreUnavailable` (Apple redelivers).
    """
    if not is_configured():
        raise NotificationRejected("App Store notifications are not accepted on this server.", status=404)
    what = "This notification"
    try:
        claims = _unverified_claims(signed_payload, what)
        environment = _environment(_notification_environment(claims), what)
        verifier = _verifier(environment)
        notification = _verified(verifier.verify_and_decode_notification, signed_payload, what, environment)
        if not (notification.notificationUUID and notification.rawNotificationType):
            raise _NotVerified(f"{what} has no id or type.")
        raw = dict(claims)
        transactions: tuple[StoreTransaction, ...] = ()
        data = notification.data
        if data is not None and data.signedTransactionInfo:
            payload, transaction_claims = _signed_transaction(
                verifier, data.signedTransactionInfo, environment, "The notification's transaction"
            )
            renewal: JWSRenewalInfoDecodedPayload | None = None
            renewal_claims: dict[str, Any] | None = None
            if data.signedRenewalInfo:
                renewal, renewal_claims = _signed_renewal_info(
                    verifier, data.signedRenewalInfo, environment, "The notification's renewal info"
                )
            in_billing_retry = bool(renewal and renewal.isInBillingRetryPeriod)
            expired = notification.rawNotificationType == "EXPIRED" or (
                notification.rawNotificationType == "GRACE_PERIOD_EXPIRED" and not in_billing_retry
            )
            transaction = _store_transaction(
                payload, transaction_claims, environment, what, renewal=renewal, expired=expired
            )
            transactions = (transaction,)
            raw["data"] = {
                **claims["data"],
                "transactionInfo": transaction_claims,
                "renewalInfo": renewal_claims,
            }
    except _NotVerified as exc:
        logger.warning("refused an App Store notification: %s", exc)
        raise NotificationRejected(str(exc)) from exc
    return StoreNotice(
        platform=PLATFORM,
        notification_id=notification.notificationUUID,
        type=notification.rawNotificationType,
        subtype=notification.rawSubtype or "",
        environment=environment,
        transactions=transactions,
        raw=raw,
    )


# --- App Store Server API ----------------------------------------------------------------------------------


class _ApiClient(AppStoreServerAPIClient):
    """Apple's client, with our timeout: the library waits 30 s, longer than a purchase call may hang."""

    def _execute_request(
        self,
        method: str,
        url: str,
        params: dict[str, str | list[str]],
        headers: dict[str, str],
        json: dict[str, Any] | None,
        data: bytes | None,
    ) -> requests.Response:
        return requests.request(
            method,
            url,
            params=params,
            headers=headers,
            json=json,
            data=data,
            timeout=settings.STORE_HTTP_TIMEOUT_SECONDS,
        )


@functools.cache
def _api_client(environment: Environment) -> _ApiClient:
    """The API client of one environment; it signs a fresh token with the `.p8` key for every request."""
    try:
        signing_key = Path(settings.APPLE_API_PRIVATE_KEY).read_bytes()
        return _ApiClient(
            signing_key=signing_key,
            key_id=settings.APPLE_API_KEY_ID,
            issuer_id=settings.APPLE_API_ISSUER_ID,
            bundle_id=settings.APPLE_BUNDLE_ID,
            environment=_APPLE_ENVIRONMENTS[environment],
        )
    except (OSError, ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            f"APPLE_API_PRIVATE_KEY: {settings.APPLE_API_PRIVATE_KEY!r} is not a readable .p8 key: {exc}"
        ) from exc


def _api_call(call: Callable[[], T]) -> T | None:
    """`call()`, with what Apple answers mapped onto our errors; None when Apple knows no such purchase."""
    try:
        return call()
    except requests.RequestException as exc:  # connection, timeout, a body that is not JSON
        logger.warning("the App Store Server API did not answer: %s", exc)
        raise StoreUnavailable() from exc
    except APIException as exc:
        status = exc.http_status_code
        if status == 429 or status >= 500 or exc.api_error in _RETRYABLE_API_ERRORS:
            logger.warning("the App Store Server API answered %s (%s)", status, exc.raw_api_error)
            raise StoreUnavailable() from exc
        if status == 404:
            return None
        if status in (401, 403):
            # Our key, not the user's purchase: say so loudly, and let the user retry once it is fixed.
            logger.error("the App Store Server API refused our key (%s): check APPLE_API_*", status)
            raise StoreUnavailable() from exc
        raise InvalidReceipt("The App Store does not know this purchase.") from exc


def transaction_history(
    original_transaction_id: str, environment: Environment
) -> list[StoreTransaction] | None:
    """Every transaction of the customer who made `original_transaction_id`, oldest first, as the App Store
    Server API lists them (all pages), each signed transaction verified like the app's. The latest
    transaction of each subscription carries its current state and renewal info (Get All Subscription
    Statuses); older ones are stated from their own dates.

    None when the API key is not configured (restore then relies on what the app and notifications sent);
    [] when Apple knows no such purchase in `environment`.
    """
    if not (
        is_configured()
        and settings.APPLE_API_KEY_ID
        and settings.APPLE_API_ISSUER_ID
        and settings.APPLE_API_PRIVATE_KEY
    ):
        return None
    if environment not in _APPLE_ENVIRONMENTS:
        raise ValueError(f"the App Store has no {environment} environment")
    if not isinstance(original_transaction_id, str) or not TRANSACTION_ID.fullmatch(original_transaction_id):
        raise InvalidReceipt("This is not an App Store transaction id.")
    client = _api_client(environment)
    verifier = _verifier(environment)
    what = "A transaction in the App Store's history"
    try:
        transactions = [
            _store_transaction(*_signed_transaction(verifier, signed, environment, what), environment, what)
            for signed in _history(client, original_transaction_id)
        ]
        if not any(t.product_type is ProductType.SUBSCRIPTION for t in transactions):
            return transactions
        latest = _latest_subscriptions(client, verifier, original_transaction_id, environment)
    except _NotVerified as exc:
        logger.error("the App Store Server API sent data that does not verify: %s", exc)
        raise InvalidReceipt(str(exc)) from exc
    by_id = {transaction.transaction_id: transaction for transaction in transactions}
    return list({**by_id, **latest}.values())


def _history(client: _ApiClient, transaction_id: str) -> list[str]:
    """All pages of Get Transaction History (v2), oldest first."""
    request = TransactionHistoryRequest(sort=Order.ASCENDING)
    signed: list[str] = []
    revision: str | None = None
    while True:
        page = _api_call(
            functools.partial(
                client.get_transaction_history,
                transaction_id,
                revision,
                request,
                GetTransactionHistoryVersion.V2,
            )
        )
        if page is None:
            return []
        signed.extend(page.signedTransactions or [])
        # A revision that does not move would page forever.
        if not page.hasMore or not page.revision or page.revision == revision:
            return signed
        revision = page.revision


def _latest_subscriptions(
    client: _ApiClient, verifier: SignedDataVerifier, transaction_id: str, environment: Environment
) -> dict[str, StoreTransaction]:
    """The latest transaction of each of the customer's subscriptions with its renewal info and Apple's
    status, by transaction id."""
    statuses = _api_call(functools.partial(client.get_all_subscription_statuses, transaction_id))
    latest: dict[str, StoreTransaction] = {}
    what = "A subscription status from the App Store"
    for group in (statuses.data if statuses else None) or []:
        for item in group.lastTransactions or []:
            if not item.signedTransactionInfo:
                continue
            payload, claims = _signed_transaction(verifier, item.signedTransactionInfo, environment, what)
            renewal = None
            if item.signedRenewalInfo:
                renewal, _ = _signed_renewal_info(verifier, item.signedRenewalInfo, environment, what)
            transaction = _store_transaction(
                payload, claims, environment, what, renewal=renewal, expired=item.status == Status.EXPIRED
            )
            latest[transaction.transaction_id] = transaction
    return latest
