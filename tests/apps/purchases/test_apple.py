"""The App Store adapter against Apple's real app-store-server-library: only the root certificate (and the
network edge, for OCSP and the App Store Server API) is the fake's, so every check the library makes runs."""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import uuid

import pytest
import requests
from django.core.exceptions import ImproperlyConfigured

from apps.core.errors import InvalidReceipt, StoreUnavailable
from apps.purchases.stores import Environment, NotificationRejected, ProductType, SubscriptionState, apple
from tests.fakes.apple import (
    APP_APPLE_ID,
    BUNDLE_ID,
    DAY_MS,
    SUBSCRIPTION,
    CertificateChain,
    FakeAppStore,
    SubscriptionStatus,
    now_ms,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _same_root(store: FakeAppStore, **options) -> CertificateChain:
    return CertificateChain.build(root=(store.chain.root, store.chain.root_key), **options)


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


# --- Configuration -----------------------------------------------------------------------------------------


def test_is_configured_needs_a_bundle_id_and_a_root(settings, apple_store) -> None:
    assert apple.is_configured()
    settings.APPLE_ROOT_CERTIFICATES = []
    assert not apple.is_configured()
    settings.APPLE_ROOT_CERTIFICATES = ["/tmp/root.cer"]
    settings.APPLE_BUNDLE_ID = ""
    assert not apple.is_configured()


def test_without_configuration_nothing_verifies(settings, apple_store) -> None:
    signed = apple_store.signed_transaction()
    settings.APPLE_ROOT_CERTIFICATES = []
    with pytest.raises(InvalidReceipt, match="not accepted on this server"):
        apple.verify_transaction(signed)
    with pytest.raises(NotificationRejected) as rejected:
        apple.verify_notification(apple_store.signed_notification("TEST"))
    assert rejected.value.status == 404


def test_a_der_root_file_works_as_well_as_pem(settings, apple_store, tmp_path) -> None:
    settings.APPLE_ROOT_CERTIFICATES = [str(apple_store.write_root_certificate(tmp_path, pem=False))]
    assert apple.verify_transaction(apple_store.signed_transaction()).store_product_id == "credits_100"


def test_an_unreadable_root_file_is_a_configuration_error(settings, apple_store, tmp_path) -> None:
    (tmp_path / "junk.cer").write_bytes(b"not a certificate")
    settings.APPLE_ROOT_CERTIFICATES = [str(tmp_path / "junk.cer")]
    with pytest.raises(ImproperlyConfigured, match="junk.cer"):
        apple.verify_transaction(apple_store.signed_transaction())


def test_production_needs_the_app_apple_id_sandbox_does_not(settings, apple_store) -> None:
    settings.APPLE_APP_APPLE_ID = None
    with pytest.raises(ImproperlyConfigured, match="APPLE_APP_APPLE_ID"):
        apple.verify_transaction(apple_store.signed_transaction())
    sandbox = apple.verify_transaction(apple_store.signed_transaction(environment="Sandbox"))
    assert sandbox.environment is Environment.SANDBOX


def test_a_settings_change_drops_the_cached_verifiers(settings, apple_store) -> None:
    signed = apple_store.signed_transaction()
    apple.verify_transaction(signed)
    settings.APPLE_BUNDLE_ID = "com.example.other"
    with pytest.raises(InvalidReceipt, match="another app"):
        apple.verify_transaction(signed)


# --- Signed transactions -----------------------------------------------------------------------------------


def test_a_consumable_verifies_and_translates(apple_store) -> None:
    token = uuid.uuid4()
    purchased = now_ms() - 5_000
    signed = apple_store.signed_transaction(
        transactionId="2000000900000001",
        originalTransactionId="2000000900000001",
        productId="credits_500",
        purchaseDate=purchased,
        quantity=2,
        appAccountToken=str(token).upper(),
    )

    transaction = apple.verify_transaction(signed)

    assert transaction.platform == "IOS"
    assert transaction.environment is Environment.PRODUCTION
    assert transaction.transaction_id == transaction.original_id == "2000000900000001"
    assert transaction.store_product_id == "credits_500"
    assert transaction.product_type is ProductType.CONSUMABLE
    assert transaction.purchased_at == dt.datetime.fromtimestamp(purchased / 1000, tz=dt.UTC)
    assert transaction.purchased_at.tzinfo is dt.UTC
    assert transaction.account_token == str(token)
    assert transaction.quantity == 2
    assert transaction.expires_at is transaction.revoked_at is None
    assert transaction.state is transaction.will_renew is None
    assert transaction.raw["productId"] == "credits_500"
    assert transaction.raw["storefront"] == "USA"  # every claim Apple signed, for admin


def test_without_an_app_account_token_there_is_none(apple_store) -> None:
    assert apple.verify_transaction(apple_store.signed_transaction()).account_token is None


@pytest.mark.parametrize(
    ("claim", "environment"), [("Production", Environment.PRODUCTION), ("Sandbox", Environment.SANDBOX)]
)
def test_the_environment_is_reported_as_signed(apple_store, claim, environment) -> None:
    assert (
        apple.verify_transaction(apple_store.signed_transaction(environment=claim)).environment is environment
    )


@pytest.mark.parametrize("product_type", ["Consumable", "Non-Consumable", "Non-Renewing Subscription"])
def test_only_auto_renewable_subscriptions_are_subscriptions(apple_store, product_type) -> None:
    transaction = apple.verify_transaction(apple_store.signed_transaction(type=product_type))
    assert transaction.product_type is ProductType.CONSUMABLE
    assert transaction.state is None


def test_a_subscription_states_itself_from_its_dates(apple_store) -> None:
    active = apple.verify_transaction(apple_store.signed_transaction(type=SUBSCRIPTION))
    assert active.product_type is ProductType.SUBSCRIPTION
    assert active.state is SubscriptionState.ACTIVE
    assert active.expires_at > dt.datetime.now(dt.UTC)
    assert active.will_renew is None  # renewal info is not in a transaction

    lapsed = apple.verify_transaction(
        apple_store.signed_transaction(type=SUBSCRIPTION, expiresDate=now_ms() - DAY_MS)
    )
    assert lapsed.state is SubscriptionState.EXPIRED

    refunded = apple.verify_transaction(
        apple_store.signed_transaction(type=SUBSCRIPTION, revocationDate=now_ms(), revocationReason=1)
    )
    assert refunded.state is SubscriptionState.REVOKED
    assert refunded.revoked_at is not None
    assert refunded.revocation_reason == "refunded_due_to_issue"


def test_a_forged_signature_is_refused(apple_store) -> None:
    signed = apple_store.signed_transaction(productId="credits_100")
    with pytest.raises(InvalidReceipt, match="valid App Store signature"):
        apple.verify_transaction(FakeAppStore.forged(signed, productId="credits_5000"))


def test_a_truncated_transaction_is_refused(apple_store) -> None:
    signed = apple_store.signed_transaction()
    for cut in (
        signed[:-10],
        signed.rsplit(".", 1)[0],
        signed.rsplit(".", 1)[0] + ".",
        signed[: len(signed) // 2],
    ):
        with pytest.raises(InvalidReceipt):
            apple.verify_transaction(cut)


@pytest.mark.parametrize(
    "not_a_jws",
    ["", "receipt", "a.b", "a.b.c.d", "..", "MIIT8QYJKoZIhvcNAQcCoIIT4jCCE94CAQExCzAJ", " " * 10],
)
def test_what_is_not_a_jws_is_refused(apple_store, not_a_jws) -> None:
    with pytest.raises(InvalidReceipt, match="not signed App Store data"):
        apple.verify_transaction(not_a_jws)


def _fuzz_inputs(store: FakeAppStore, signed: str) -> list[object]:
    """Garbage of every shape a client could send, made around the genuine `signed`."""
    header, payload, signature = signed.split(".")

    def with_payload(claims: object) -> str:
        return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"

    rng = random.Random(20261204)
    inputs: list[object] = [
        None,
        b"bytes",
        12,
        "\x00.\x00.\x00",
        "\ud800.\udfff.x",  # lone surrogates
        "é.ü.ß",
        "x" * (apple.SIGNED_DATA_MAX_LENGTH + 1),
        signed + "A" * apple.SIGNED_DATA_MAX_LENGTH,
        f"{header}.{payload}.",
        f"{header}.{payload}.{signature}{signature}",
        f"{header}.{_b64(b'[' * 50_000)}.{signature}",  # nesting deep enough for a RecursionError
        f"{header}.{_b64(b'[]')}.{signature}",
        f"{header}.{_b64(b'null')}.{signature}",
        with_payload({"environment": ["Production"]}),
        with_payload({"data": {"environment": {}}}),
        with_payload({"environment": "Production", "signedDate": "x"}),
        with_payload({"environment": "Production", "signedDate": 1e300}),
        f"{_b64(b'{}')}.{payload}.{signature}",
        f"{_b64(json.dumps({'alg': 'none'}).encode())}.{payload}.",
        f"{_b64(json.dumps({'alg': 'ES256', 'x5c': 'MIIB'}).encode())}.{payload}.{signature}",
        f"{_b64(json.dumps({'alg': 'ES256', 'x5c': ['!!', '??', '**']}).encode())}.{payload}.{signature}",
        f"{_b64(json.dumps({'alg': 'ES256', 'x5c': [1, 2, 3]}).encode())}.{payload}.{signature}",
        f"{_b64(json.dumps({'alg': 'HS256', 'x5c': store.chain.x5c()}).encode())}.{payload}.{signature}",
    ]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \n"
    for _ in range(150):
        inputs.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400))))
        inputs.append(".".join(_b64(rng.randbytes(rng.randint(0, 300))) for _ in range(3)))
        position = rng.randrange(len(signed))
        inputs.append(signed[:position] + rng.choice(alphabet) + signed[position + 1 :])
    return inputs


def _same_bytes(garbage: object, signed: str) -> bool:
    """Whether `garbage` decodes to the very bytes of `signed`: a changed character in the unused low bits
    of a base64url part leaves the signed data as it was, and then it rightly verifies."""
    if not isinstance(garbage, str) or garbage.count(".") != 2:
        return False
    try:
        decoded = [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in garbage.split(".")]
    except ValueError:
        return False
    return decoded == [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in signed.split(".")]


def test_fuzz_transactions_only_ever_raise_invalid_receipt(apple_store) -> None:
    signed = apple_store.signed_transaction()
    for garbage in _fuzz_inputs(apple_store, signed):
        try:
            apple.verify_transaction(garbage)  # type: ignore[arg-type]
        except InvalidReceipt:
            continue
        assert _same_bytes(garbage, signed), repr(garbage)[:200]


def test_fuzz_notifications_only_ever_raise_notification_rejected(apple_store) -> None:
    signed = apple_store.signed_notification("DID_RENEW", transaction={"type": SUBSCRIPTION}, renewal={})
    for garbage in _fuzz_inputs(apple_store, signed):
        try:
            apple.verify_notification(garbage)  # type: ignore[arg-type]
        except NotificationRejected as rejected:
            assert rejected.status == 400
            continue
        assert _same_bytes(garbage, signed), repr(garbage)[:200]


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"purchaseDate": "soon"}, "claims the App Store does not write"),
        ({"quantity": {"many": True}}, "claims the App Store does not write"),
        ({"purchaseDate": 10**20}, "date out of range"),
        ({"purchaseDate": None}, "no purchase date"),
        ({"transactionId": None}, "names no transaction"),
        ({"productId": ""}, "names no transaction or product"),
    ],
)
def test_signed_claims_that_cannot_be_read_are_refused(apple_store, claims, reason) -> None:
    """Even with Apple's signature, a transaction we cannot read is refused rather than half-read."""
    with pytest.raises(InvalidReceipt, match=reason):
        apple.verify_transaction(apple_store.signed_transaction(**claims))


def test_a_chain_from_another_root_is_refused(apple_store) -> None:
    other = FakeAppStore()
    with pytest.raises(InvalidReceipt, match="valid App Store signature"):
        apple.verify_transaction(other.signed_transaction())


def test_a_chain_not_valid_when_signed_is_refused(apple_store) -> None:
    old = _same_root(
        apple_store,
        not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
    )
    with pytest.raises(InvalidReceipt, match="valid App Store signature"):
        apple.verify_transaction(apple_store.signed_transaction(chain=old))


def test_offline_the_chain_is_checked_at_the_signed_date(apple_store) -> None:
    """Without online checks the library checks the chain as of `signedDate`, so old purchases stay
    verifiable after Apple rotates its certificates (with online checks on it uses the current time)."""
    old = _same_root(
        apple_store,
        not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
    )
    signed_then = _ms(dt.datetime(2020, 6, 1, tzinfo=dt.UTC))
    transaction = apple.verify_transaction(
        apple_store.signed_transaction(chain=old, signedDate=signed_then, purchaseDate=signed_then)
    )
    assert transaction.purchased_at.year == 2020


@pytest.mark.parametrize("missing", ["leaf_marker", "intermediate_marker"])
def test_a_chain_without_apples_marker_extension_is_refused(apple_store, missing) -> None:
    chain = _same_root(apple_store, **{missing: False})
    with pytest.raises(InvalidReceipt, match="valid App Store signature"):
        apple.verify_transaction(apple_store.signed_transaction(chain=chain))


def test_another_apps_transaction_is_refused(apple_store) -> None:
    with pytest.raises(InvalidReceipt, match="made for another app"):
        apple.verify_transaction(apple_store.signed_transaction(bundleId="com.example.other"))


@pytest.mark.parametrize("environment", ["Xcode", "LocalTesting", "production", None])
def test_only_production_and_sandbox_data_is_taken(apple_store, environment) -> None:
    """The library skips the signature for Xcode and local-testing data: such data never reaches it."""
    unsigned = apple_store.transaction_claims(environment=environment)
    token = f"{_b64(json.dumps({'alg': 'none'}).encode())}.{_b64(json.dumps(unsigned).encode())}.sig"
    for signed in (token, apple_store.signed_transaction(environment=environment)):
        with pytest.raises(InvalidReceipt, match="Production or Sandbox"):
            apple.verify_transaction(signed)


def test_an_ocsp_responder_that_does_not_answer_is_retryable(settings, apple_store) -> None:
    settings.APPLE_ONLINE_CHECKS = True
    apple_store.ocsp_status = 503
    signed = apple_store.signed_transaction()
    with pytest.raises(StoreUnavailable):
        apple.verify_transaction(signed)
    with pytest.raises(StoreUnavailable):
        apple.verify_notification(
            apple_store.signed_notification("DID_RENEW", transaction={"type": SUBSCRIPTION})
        )
    assert apple_store.calls_to("ocsp.fake-apple.test")


def test_online_checks_ask_ocsp_once_per_chain(settings, apple_store) -> None:
    settings.APPLE_ONLINE_CHECKS = True
    apple.verify_transaction(apple_store.signed_transaction())
    apple.verify_transaction(apple_store.signed_transaction())
    assert len(apple_store.calls_to("ocsp.fake-apple.test")) == 2  # intermediate and leaf, then cached


def test_online_checks_refuse_a_revoked_leaf(settings, apple_store) -> None:
    settings.APPLE_ONLINE_CHECKS = True
    apple_store.revoked_serials.add(apple_store.chain.leaf.serial_number)
    with pytest.raises(InvalidReceipt, match="valid App Store signature"):
        apple.verify_transaction(apple_store.signed_transaction())


# --- Notifications -----------------------------------------------------------------------------------------


def _subscription(**claims) -> dict:
    return {"type": SUBSCRIPTION, **claims}


def test_did_renew(apple_store) -> None:
    signed = apple_store.signed_notification(
        "DID_RENEW", transaction=_subscription(originalTransactionId="2000000000000777"), renewal={}
    )

    notice = apple.verify_notification(signed)

    assert notice.platform == "IOS"
    assert notice.type == "DID_RENEW"
    assert notice.subtype == ""
    assert notice.environment is Environment.PRODUCTION
    uuid.UUID(notice.notification_id)
    (transaction,) = notice.transactions
    assert transaction.original_id == "2000000000000777"
    assert transaction.product_type is ProductType.SUBSCRIPTION
    assert transaction.state is SubscriptionState.ACTIVE
    assert transaction.will_renew is True
    assert transaction.grace_until is None
    assert notice.raw["notificationType"] == "DID_RENEW"
    assert notice.raw["data"]["transactionInfo"]["originalTransactionId"] == "2000000000000777"
    assert notice.raw["data"]["renewalInfo"]["autoRenewStatus"] == 1


def test_did_fail_to_renew_in_the_grace_period(apple_store) -> None:
    grace_end = now_ms() + 3 * DAY_MS
    signed = apple_store.signed_notification(
        "DID_FAIL_TO_RENEW",
        "GRACE_PERIOD",
        transaction=_subscription(expiresDate=now_ms() - 1000),
        renewal={"isInBillingRetryPeriod": True, "gracePeriodExpiresDate": grace_end, "expirationIntent": 2},
    )

    notice = apple.verify_notification(signed)

    assert (notice.type, notice.subtype) == ("DID_FAIL_TO_RENEW", "GRACE_PERIOD")
    (transaction,) = notice.transactions
    assert transaction.state is SubscriptionState.GRACE_PERIOD
    assert transaction.grace_until == dt.datetime.fromtimestamp(grace_end / 1000, tz=dt.UTC)
    assert transaction.will_renew is True


def test_did_fail_to_renew_without_grace_is_billing_retry(apple_store) -> None:
    signed = apple_store.signed_notification(
        "DID_FAIL_TO_RENEW",
        transaction=_subscription(expiresDate=now_ms() - 1000),
        renewal={"isInBillingRetryPeriod": True, "expirationIntent": 2},
    )
    (transaction,) = apple.verify_notification(signed).transactions
    assert transaction.state is SubscriptionState.BILLING_RETRY
    assert transaction.grace_until is None


def test_auto_renew_disabled_stays_active_until_it_expires(apple_store) -> None:
    signed = apple_store.signed_notification(
        "DID_CHANGE_RENEWAL_STATUS",
        "AUTO_RENEW_DISABLED",
        transaction=_subscription(),
        renewal={"autoRenewStatus": 0},
    )
    notice = apple.verify_notification(signed)
    assert notice.subtype == "AUTO_RENEW_DISABLED"
    (transaction,) = notice.transactions
    assert transaction.state is SubscriptionState.ACTIVE
    assert transaction.will_renew is False


@pytest.mark.parametrize("subtype", ["VOLUNTARY", "BILLING_RETRY"])
def test_expired(apple_store, subtype) -> None:
    signed = apple_store.signed_notification(
        "EXPIRED",
        subtype,
        transaction=_subscription(expiresDate=now_ms() - 40 * DAY_MS),
        renewal={"autoRenewStatus": 0, "expirationIntent": 1 if subtype == "VOLUNTARY" else 2},
    )
    (transaction,) = apple.verify_notification(signed).transactions
    assert transaction.state is SubscriptionState.EXPIRED
    assert transaction.will_renew is False


@pytest.mark.parametrize(
    ("in_billing_retry", "state"),
    [(False, SubscriptionState.EXPIRED), (True, SubscriptionState.BILLING_RETRY)],
)
def test_grace_period_expired(apple_store, in_billing_retry, state) -> None:
    signed = apple_store.signed_notification(
        "GRACE_PERIOD_EXPIRED",
        transaction=_subscription(expiresDate=now_ms() - 7 * DAY_MS),
        renewal={"isInBillingRetryPeriod": in_billing_retry, "gracePeriodExpiresDate": now_ms() - 1000},
    )
    (transaction,) = apple.verify_notification(signed).transactions
    assert transaction.state is state


def test_refund_of_a_subscription_revokes_it(apple_store) -> None:
    signed = apple_store.signed_notification(
        "REFUND", transaction=_subscription(revocationDate=now_ms(), revocationReason=0), renewal={}
    )
    (transaction,) = apple.verify_notification(signed).transactions
    assert transaction.state is SubscriptionState.REVOKED
    assert transaction.revocation_reason == "refunded_for_other_reason"


def test_refund_of_a_credit_pack(apple_store) -> None:
    signed = apple_store.signed_notification(
        "REFUND",
        transaction={"transactionId": "2000000000000999", "revocationDate": now_ms(), "revocationReason": 1},
    )
    notice = apple.verify_notification(signed)
    (transaction,) = notice.transactions
    assert transaction.transaction_id == "2000000000000999"
    assert transaction.product_type is ProductType.CONSUMABLE
    assert transaction.revoked_at is not None
    assert transaction.revocation_reason == "refunded_due_to_issue"
    assert notice.raw["data"]["renewalInfo"] is None


def test_a_test_notification_carries_no_transaction(apple_store) -> None:
    notice = apple.verify_notification(apple_store.signed_notification("TEST", environment="Sandbox"))
    assert notice.type == "TEST"
    assert notice.environment is Environment.SANDBOX
    assert notice.transactions == ()


def test_a_summary_notification_carries_no_transaction(apple_store) -> None:
    signed = apple_store.signed_notification(
        "RENEWAL_EXTENSION",
        "SUMMARY",
        summary={"productId": "plan_monthly", "requestIdentifier": str(uuid.uuid4()), "succeededCount": 3},
    )
    notice = apple.verify_notification(signed)
    assert (notice.type, notice.subtype) == ("RENEWAL_EXTENSION", "SUMMARY")
    assert notice.transactions == ()
    assert notice.raw["summary"]["succeededCount"] == 3


def test_a_sandbox_notification_is_reported_as_sandbox(apple_store) -> None:
    notice = apple.verify_notification(
        apple_store.signed_notification("ONE_TIME_CHARGE", transaction={}, environment="Sandbox")
    )
    assert notice.environment is notice.transactions[0].environment is Environment.SANDBOX


def test_a_forged_notification_is_rejected(apple_store) -> None:
    signed = apple_store.signed_notification("TEST")
    with pytest.raises(NotificationRejected) as rejected:
        apple.verify_notification(FakeAppStore.forged(signed, notificationType="REFUND"))
    assert rejected.value.status == 400


def test_a_notification_from_another_root_is_rejected(apple_store) -> None:
    with pytest.raises(NotificationRejected, match="valid App Store signature"):
        apple.verify_notification(FakeAppStore().signed_notification("TEST"))


def test_another_apps_notification_is_rejected(apple_store) -> None:
    with pytest.raises(NotificationRejected, match="another app"):
        apple.verify_notification(apple_store.signed_notification("TEST", bundle_id="com.example.other"))


def test_a_production_notification_for_another_app_apple_id_is_rejected(apple_store) -> None:
    with pytest.raises(NotificationRejected, match="another app"):
        apple.verify_notification(apple_store.signed_notification("TEST", app_apple_id=APP_APPLE_ID + 1))
    # Sandbox data carries no app Apple id worth checking (apps in review have none yet).
    sandbox = apple_store.signed_notification("TEST", app_apple_id=APP_APPLE_ID + 1, environment="Sandbox")
    assert apple.verify_notification(sandbox).environment is Environment.SANDBOX


def test_a_notification_carrying_a_forged_transaction_is_rejected(apple_store) -> None:
    forged = FakeAppStore.forged(apple_store.signed_transaction(), productId="credits_5000")
    with pytest.raises(NotificationRejected, match="transaction does not carry a valid"):
        apple.verify_notification(apple_store.signed_notification("ONE_TIME_CHARGE", transaction=forged))


def test_a_notification_carrying_another_environments_transaction_is_rejected(apple_store) -> None:
    sandbox = apple_store.signed_transaction(environment="Sandbox")
    with pytest.raises(NotificationRejected, match="Production environment"):
        apple.verify_notification(apple_store.signed_notification("ONE_TIME_CHARGE", transaction=sandbox))


def test_a_notification_carrying_another_apps_transaction_is_rejected(apple_store) -> None:
    other = apple_store.signed_transaction(bundleId="com.example.other")
    with pytest.raises(NotificationRejected, match="another app"):
        apple.verify_notification(apple_store.signed_notification("ONE_TIME_CHARGE", transaction=other))


def test_a_notification_with_forged_renewal_info_is_rejected(apple_store) -> None:
    renewal = FakeAppStore.forged(apple_store.signed_renewal_info(), autoRenewStatus=1)
    signed = apple_store.signed_notification("DID_RENEW", transaction=_subscription(), renewal=renewal)
    with pytest.raises(NotificationRejected, match="renewal info"):
        apple.verify_notification(signed)


# --- App Store Server API ----------------------------------------------------------------------------------


def test_history_is_none_without_an_api_key(apple_store) -> None:
    apple_store.history.append(apple_store.signed_transaction(transactionId="2000000000000100"))
    assert apple.transaction_history("2000000000000100", Environment.PRODUCTION) is None
    assert apple_store.calls == []


def test_history_pages_and_verifies_every_transaction(settings, apple_server_api) -> None:
    store = apple_server_api
    store.page_size = 2
    first = store.signed_transaction(transactionId="2000000000000100", productId="credits_100")
    store.history += [
        first,
        store.signed_transaction(transactionId="2000000000000101", productId="credits_500"),
        store.signed_transaction(transactionId="2000000000000102", productId="credits_100", quantity=3),
    ]
    settings.STORE_HTTP_TIMEOUT_SECONDS = 7

    transactions = apple.transaction_history("2000000000000100", Environment.PRODUCTION)

    assert [t.transaction_id for t in transactions] == [
        "2000000000000100",
        "2000000000000101",
        "2000000000000102",
    ]
    assert transactions[2].quantity == 3
    assert all(t.environment is Environment.PRODUCTION for t in transactions)
    pages = store.calls_to("/inApps/v2/history/2000000000000100")
    assert len(pages) == 2
    assert "revision=2" in pages[1].url and "sort=ASCENDING" in pages[1].url
    assert all(call.timeout == 7 for call in pages)
    assert store.calls_to("/inApps/v1/subscriptions") == []  # no subscription, no status to ask for


def test_history_gives_the_latest_subscription_its_status(apple_server_api) -> None:
    store = apple_server_api
    original = "2000000000000200"
    month = 30 * DAY_MS
    start = now_ms() - 2 * month + DAY_MS
    first = store.signed_transaction(
        type=SUBSCRIPTION, transactionId=original, purchaseDate=start, expiresDate=start + month
    )
    renewal = store.signed_transaction(
        type=SUBSCRIPTION,
        transactionId="2000000000000201",
        originalTransactionId=original,
        purchaseDate=start + month,
        expiresDate=start + 2 * month - 2 * DAY_MS,
    )
    grace_end = now_ms() + 5 * DAY_MS
    store.history += [store.signed_transaction(transactionId="2000000000000150"), first, renewal]
    store.statuses.append(
        SubscriptionStatus(
            status=4,
            signed_transaction=renewal,
            signed_renewal_info=store.signed_renewal_info(
                originalTransactionId=original, isInBillingRetryPeriod=True, gracePeriodExpiresDate=grace_end
            ),
        )
    )

    transactions = apple.transaction_history(original, Environment.PRODUCTION)

    by_id = {t.transaction_id: t for t in transactions}
    assert list(by_id) == ["2000000000000150", original, "2000000000000201"]
    assert by_id["2000000000000150"].state is None
    assert by_id[original].state is SubscriptionState.EXPIRED
    latest = by_id["2000000000000201"]
    assert latest.state is SubscriptionState.GRACE_PERIOD
    assert latest.grace_until == dt.datetime.fromtimestamp(grace_end / 1000, tz=dt.UTC)
    assert latest.will_renew is True


def test_history_takes_apples_word_that_a_subscription_expired(apple_server_api) -> None:
    store = apple_server_api
    signed = store.signed_transaction(type=SUBSCRIPTION, transactionId="2000000000000300")
    store.history.append(signed)
    store.statuses.append(
        SubscriptionStatus(
            status=2,
            signed_transaction=signed,
            signed_renewal_info=store.signed_renewal_info(
                originalTransactionId="2000000000000300", autoRenewStatus=0
            ),
        )
    )
    (transaction,) = apple.transaction_history("2000000000000300", Environment.PRODUCTION)
    assert transaction.state is SubscriptionState.EXPIRED
    assert transaction.will_renew is False


def test_history_in_the_sandbox(apple_server_api) -> None:
    store = apple_server_api
    store.history.append(store.signed_transaction(transactionId="2000000000000400", environment="Sandbox"))
    (transaction,) = apple.transaction_history("2000000000000400", Environment.SANDBOX)
    assert transaction.environment is Environment.SANDBOX
    assert store.calls_to("api.storekit-sandbox.apple.com")
    assert apple.transaction_history("2000000000000400", Environment.PRODUCTION) == []


def test_history_of_an_unknown_purchase_is_empty(apple_server_api) -> None:
    assert apple.transaction_history("2000000000000999", Environment.PRODUCTION) == []


@pytest.mark.parametrize("status", [503, 500, 429])
def test_history_when_apple_is_down_is_retryable(apple_server_api, status) -> None:
    apple_server_api.history.append(apple_server_api.signed_transaction(transactionId="2000000000000500"))
    apple_server_api.api_status = status
    with pytest.raises(StoreUnavailable):
        apple.transaction_history("2000000000000500", Environment.PRODUCTION)


def test_history_when_apple_cannot_be_reached_is_retryable(apple_server_api, monkeypatch) -> None:
    def timeout(*args, **kwargs):
        raise requests.Timeout("read timed out")

    monkeypatch.setattr(requests, "request", timeout)
    with pytest.raises(StoreUnavailable):
        apple.transaction_history("2000000000000500", Environment.PRODUCTION)


def test_history_with_a_key_apple_refuses_is_retryable(settings, apple_server_api) -> None:
    apple_server_api.history.append(apple_server_api.signed_transaction(transactionId="2000000000000600"))
    settings.APPLE_API_KEY_ID = "REVOKEDKEY"
    with pytest.raises(StoreUnavailable):
        apple.transaction_history("2000000000000600", Environment.PRODUCTION)


def test_history_refuses_a_transaction_that_does_not_verify(apple_server_api) -> None:
    apple_server_api.history.append(
        FakeAppStore(bundle_id=BUNDLE_ID).signed_transaction(transactionId="2000000000000700")
    )
    with pytest.raises(InvalidReceipt, match="valid App Store signature"):
        apple.transaction_history("2000000000000700", Environment.PRODUCTION)


@pytest.mark.parametrize(
    "transaction_id", ["", "../../v1/notifications/history", "2000?x=1", "12 34", "9" * 33]
)
def test_history_takes_only_transaction_ids(apple_server_api, transaction_id) -> None:
    with pytest.raises(InvalidReceipt, match="not an App Store transaction id"):
        apple.transaction_history(transaction_id, Environment.PRODUCTION)
    assert apple_server_api.calls == []
