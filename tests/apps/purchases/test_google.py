"""The Google Play adapter against the real google-auth, with only Google's network edge faked.

Every request goes through google-auth's AuthorizedSession (a real JWT traded for an access token at the
fake OAuth endpoint) to the fake Android Publisher API (tests/fakes/google.py `FakePlay`), and push tokens
are real RS256 JWTs checked by google-auth against the certificates the fake publishes. No database.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import random
import urllib.parse

import pytest
import requests
from django.core.exceptions import ImproperlyConfigured

from apps.core.errors import InvalidReceipt, StoreUnavailable
from apps.purchases.stores import (
    Environment,
    NotificationRejected,
    ProductType,
    StoreNotice,
    StoreTransaction,
    SubscriptionState,
)
from apps.purchases.stores import google as store
from tests.fakes.google import OAUTH_TOKEN_URL, OIDC_CERTS_URL, FakePlay, FakeResponse, signing_key
from tests.fixtures.play import PACKAGE

PACK = "credits_100"
PLAN = "plus_monthly"
PURCHASES = f"https://androidpublisher.googleapis.com/androidpublisher/v3/applications/{PACKAGE}/purchases"
ACCOUNT = "5b0f9c2e-user-account-token"

CONSUMABLE = ProductType.CONSUMABLE
SUBSCRIPTION = ProductType.SUBSCRIPTION


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def play_calls(google) -> list[tuple[str, str]]:
    return [(method, url) for method, url in google.calls if url.startswith(PURCHASES)]


# --- Configuration -------------------------------------------------------------------------------------


def test_is_configured_needs_the_package_and_the_service_account(play, settings):
    assert store.is_configured()
    settings.GOOGLE_PLAY_CREDENTIALS = ""
    assert not store.is_configured()


def test_verify_without_configuration_is_a_server_error_that_says_what_to_set(play, settings):
    settings.GOOGLE_PLAY_PACKAGE_NAME = ""
    with pytest.raises(ImproperlyConfigured, match="GOOGLE_PLAY_PACKAGE_NAME"):
        store.verify_purchase(play.add_product(PACK), PACK, CONSUMABLE)


def test_an_unreadable_service_account_file_is_a_server_error(play, settings, tmp_path):
    settings.GOOGLE_PLAY_CREDENTIALS = str(tmp_path / "missing.json")
    with pytest.raises(ImproperlyConfigured, match="GOOGLE_PLAY_CREDENTIALS"):
        store.verify_purchase(play.add_product(PACK), PACK, CONSUMABLE)


def test_one_session_signs_in_once_and_a_settings_change_drops_it(play, google, settings):
    for _ in range(3):
        store.verify_purchase(play.add_product(PACK), PACK, CONSUMABLE)
    assert google.calls_to(OAUTH_TOKEN_URL) == 1
    assert {request.authorization for request in play.requests} == {f"Bearer {google.access_tokens[0]}"}

    settings.GOOGLE_PLAY_PUSH_AUDIENCE = "https://api.example.com/elsewhere"  # any GOOGLE_PLAY_ setting
    store.verify_purchase(play.add_product(PACK), PACK, CONSUMABLE)
    assert google.calls_to(OAUTH_TOKEN_URL) == 2
    assert play.requests[-1].authorization == f"Bearer {google.access_tokens[1]}"


def test_requests_use_the_store_timeout(play, google, settings):
    settings.STORE_HTTP_TIMEOUT_SECONDS = 4
    store.verify_purchase(play.add_product(PACK), PACK, CONSUMABLE)
    store.authenticate_push(play.authorization())
    timeouts = {url: timeout for (_, url), timeout in zip(google.calls, google.timeouts, strict=True)}
    assert {timeouts[url] for url in timeouts if url.startswith(PURCHASES)} == {4}
    assert timeouts[OIDC_CERTS_URL] == 4


# --- One-time products (credit packs) ------------------------------------------------------------------


def test_a_purchased_pack_is_a_transaction(play, google):
    bought_at = now() - dt.timedelta(minutes=3)
    token = play.add_product(
        PACK, order_id="GPA.3371-1111-2222-33333", account_id=ACCOUNT, purchased_at=bought_at
    )

    transaction = store.verify_purchase(token, PACK, CONSUMABLE)

    assert transaction == StoreTransaction(
        platform="ANDROID",
        environment=Environment.PRODUCTION,
        transaction_id="GPA.3371-1111-2222-33333",
        original_id=token,
        store_product_id=PACK,
        product_type=ProductType.CONSUMABLE,
        purchased_at=bought_at.replace(microsecond=bought_at.microsecond // 1000 * 1000),
        account_token=ACCOUNT,
        quantity=1,
        purchase_token=token,
        acknowledged=False,
        raw=play.products[token],
    )
    assert play_calls(google) == [("GET", f"{PURCHASES}/productsv2/tokens/{token}")]


def test_a_multi_quantity_purchase_reports_its_quantity(play):
    transaction = store.verify_purchase(play.add_product(PACK, quantity=3), PACK, CONSUMABLE)
    assert transaction.quantity == 3


def test_a_license_tester_purchase_is_sandbox(play):
    transaction = store.verify_purchase(play.add_product(PACK, test=True), PACK, CONSUMABLE)
    assert transaction.environment == Environment.SANDBOX


def test_a_pack_without_an_account_id_has_no_account_token(play):
    assert store.verify_purchase(play.add_product(PACK), PACK, CONSUMABLE).account_token is None


def test_a_pending_payment_is_refused_and_says_it_is_pending(play):
    token = play.add_product(PACK, state="PENDING")
    with pytest.raises(InvalidReceipt, match="pending"):
        store.verify_purchase(token, PACK, CONSUMABLE)


def test_a_cancelled_purchase_is_refused(play):
    token = play.add_product(PACK, state="CANCELLED")
    with pytest.raises(InvalidReceipt, match="cancelled"):
        store.verify_purchase(token, PACK, CONSUMABLE)


def test_a_token_of_another_product_is_refused(play):
    token = play.add_product("credits_10")
    with pytest.raises(InvalidReceipt, match="another product"):
        store.verify_purchase(token, PACK, CONSUMABLE)


def test_a_purchase_without_an_order_id_gets_a_stable_id_from_its_token(play):
    token = play.add_product(PACK, with_order_id=False, test=True)
    first = store.verify_purchase(token, PACK, CONSUMABLE)
    second = store.verify_purchase(token, PACK, CONSUMABLE)
    assert first.transaction_id == second.transaction_id
    assert first.transaction_id.startswith("token:")
    other = store.verify_purchase(play.add_product(PACK, with_order_id=False), PACK, CONSUMABLE)
    assert other.transaction_id != first.transaction_id


def test_a_consumed_pack_is_acknowledged_and_an_acknowledged_unconsumed_one_is_not(play):
    consumed = store.verify_purchase(play.add_product(PACK, consumed=True), PACK, CONSUMABLE)
    assert consumed.acknowledged
    # The app acknowledged it but never consumed it: it still needs consuming, or it cannot be bought again.
    acknowledged_only = store.verify_purchase(play.add_product(PACK, acknowledged=True), PACK, CONSUMABLE)
    assert not acknowledged_only.acknowledged


def test_a_purchase_without_its_completion_time_is_dated_when_first_seen(play):
    token = play.add_product(PACK)
    del play.products[token]["purchaseCompletionTime"]
    before = now()
    assert before <= store.verify_purchase(token, PACK, CONSUMABLE).purchased_at <= now()


def test_an_unknown_purchase_state_is_retryable_and_logged(play, caplog):
    token = play.add_product(PACK)
    play.products[token]["purchaseStateContext"]["purchaseState"] = "PURCHASE_STATE_UNSPECIFIED"
    with caplog.at_level(logging.ERROR), pytest.raises(StoreUnavailable):
        store.verify_purchase(token, PACK, CONSUMABLE)
    assert "unexpected" in caplog.text


# --- Subscriptions -------------------------------------------------------------------------------------


def test_an_active_subscription_is_a_transaction(play, google):
    started = now() - dt.timedelta(days=2)
    expires = now() + dt.timedelta(days=28)
    token = play.add_subscription(
        PLAN,
        order_id="GPA.3312-4444-5555-66666",
        started_at=started,
        expires_at=expires,
        account_id=ACCOUNT,
        linked_purchase_token="old-plan-token",
    )

    transaction = store.verify_purchase(token, PLAN, SUBSCRIPTION)

    assert transaction.platform == "ANDROID"
    assert transaction.environment == Environment.PRODUCTION
    assert transaction.transaction_id == "GPA.3312-4444-5555-66666"
    assert transaction.original_id == transaction.purchase_token == token
    assert transaction.store_product_id == PLAN
    assert transaction.product_type == ProductType.SUBSCRIPTION
    assert abs(transaction.purchased_at - started) < dt.timedelta(milliseconds=1)
    assert abs(transaction.expires_at - expires) < dt.timedelta(milliseconds=1)
    assert transaction.state == SubscriptionState.ACTIVE
    assert transaction.will_renew is True
    assert transaction.grace_until is None
    assert transaction.account_token == ACCOUNT
    assert transaction.linked_purchase_token == "old-plan-token"
    assert transaction.acknowledged is False
    assert transaction.raw == play.subscriptions[token]
    assert play_calls(google) == [("GET", f"{PURCHASES}/subscriptionsv2/tokens/{token}")]


@pytest.mark.parametrize(
    ("google_state", "expires_in_days", "auto_renew", "state", "will_renew", "in_grace"),
    [
        ("ACTIVE", 30, True, SubscriptionState.ACTIVE, True, False),
        ("ACTIVE", 30, False, SubscriptionState.ACTIVE, False, False),
        ("IN_GRACE_PERIOD", 3, True, SubscriptionState.GRACE_PERIOD, True, True),
        ("ON_HOLD", -2, True, SubscriptionState.BILLING_RETRY, True, False),
        ("PAUSED", -5, True, SubscriptionState.PAUSED, True, False),
        ("CANCELED", 10, False, SubscriptionState.ACTIVE, False, False),
        ("CANCELED", -1, False, SubscriptionState.EXPIRED, False, False),
        ("EXPIRED", -1, False, SubscriptionState.EXPIRED, False, False),
    ],
    ids=[
        "active",
        "active-auto-renew-off",
        "grace-period",
        "on-hold",
        "paused",
        "canceled-until-period-end",
        "canceled-and-ended",
        "expired",
    ],
)
def test_subscription_states(play, google_state, expires_in_days, auto_renew, state, will_renew, in_grace):
    expires = now() + dt.timedelta(days=expires_in_days)
    token = play.add_subscription(PLAN, state=google_state, expires_at=expires, auto_renew=auto_renew)

    transaction = store.verify_purchase(token, PLAN, SUBSCRIPTION)

    assert transaction.state == state
    assert transaction.will_renew is will_renew
    assert transaction.grace_until == (transaction.expires_at if in_grace else None)


@pytest.mark.parametrize(
    ("google_state", "message"), [("PENDING", "pending"), ("PENDING_PURCHASE_CANCELED", "cancelled")]
)
def test_a_pending_subscription_grants_nothing(play, google_state, message):
    token = play.add_subscription(PLAN, state=google_state)
    with pytest.raises(InvalidReceipt, match=message):
        store.verify_purchase(token, PLAN, SUBSCRIPTION)


def test_each_renewal_is_a_new_order(play):
    token = play.add_subscription(PLAN, order_id="GPA.3312-0000-0000-00001")
    first = store.verify_purchase(token, PLAN, SUBSCRIPTION)

    assert play.renew(token) == "GPA.3312-0000-0000-00001..0"
    renewed = store.verify_purchase(token, PLAN, SUBSCRIPTION)
    play.renew(token)
    renewed_again = store.verify_purchase(token, PLAN, SUBSCRIPTION)

    assert [first.transaction_id, renewed.transaction_id, renewed_again.transaction_id] == [
        "GPA.3312-0000-0000-00001",
        "GPA.3312-0000-0000-00001..0",
        "GPA.3312-0000-0000-00001..1",
    ]
    assert first.original_id == renewed.original_id == renewed_again.original_id == token
    assert first.expires_at < renewed.expires_at < renewed_again.expires_at


def test_the_unpaid_latest_order_is_not_the_transaction(play):
    token = play.add_subscription(PLAN, order_id="GPA.3312-0000-0000-00002", state="IN_GRACE_PERIOD")
    play.subscriptions[token]["latestOrderId"] = "GPA.3312-0000-0000-00002..0"  # the renewal not yet paid
    assert store.verify_purchase(token, PLAN, SUBSCRIPTION).transaction_id == "GPA.3312-0000-0000-00002"


def test_a_test_subscription_is_sandbox_and_without_an_order_gets_a_stable_id(play):
    token = play.add_subscription(PLAN, test=True, with_order_id=False)
    transaction = store.verify_purchase(token, PLAN, SUBSCRIPTION)
    assert transaction.environment == Environment.SANDBOX
    assert transaction.transaction_id.startswith("token:")
    assert store.verify_purchase(token, PLAN, SUBSCRIPTION).transaction_id == transaction.transaction_id


def test_a_subscription_token_of_another_plan_is_refused(play):
    token = play.add_subscription("plus_yearly")
    with pytest.raises(InvalidReceipt, match="another product"):
        store.verify_purchase(token, PLAN, SUBSCRIPTION)


def test_an_acknowledged_subscription_says_so(play):
    token = play.add_subscription(PLAN, acknowledged=True)
    assert store.verify_purchase(token, PLAN, SUBSCRIPTION).acknowledged


def test_an_unknown_subscription_state_is_retryable(play):
    token = play.add_subscription(PLAN, state="UNSPECIFIED")
    with pytest.raises(StoreUnavailable):
        store.verify_purchase(token, PLAN, SUBSCRIPTION)


# --- Tokens and Google's errors ------------------------------------------------------------------------


def test_a_token_from_another_app_is_invalid(play, google):
    other_app = google.enable_play("com.example.other")
    token = other_app.add_product(PACK)
    with pytest.raises(InvalidReceipt) as caught:
        store.verify_purchase(token, PACK, CONSUMABLE)
    assert caught.value.message == "Google Play does not know this purchase for this app."
    with pytest.raises(InvalidReceipt):
        store.verify_purchase(other_app.add_subscription(PLAN), PLAN, SUBSCRIPTION)


@pytest.mark.parametrize(
    "answer", [FakePlay.invalid(), FakePlay.not_found(), FakePlay.gone()], ids=["400", "404", "410"]
)
def test_google_refusing_the_token_is_invalid(play, answer):
    token = play.add_subscription(PLAN)
    play.answer(token, answer)
    with pytest.raises(InvalidReceipt):
        store.verify_purchase(token, PLAN, SUBSCRIPTION)


@pytest.mark.parametrize(
    "answer",
    [FakePlay.unavailable(), FakePlay.error(500, "Internal error."), FakePlay.rate_limited()],
    ids=["503", "500", "429"],
)
def test_google_failing_is_retryable(play, answer):
    token = play.add_product(PACK)
    play.answer(token, answer)
    with pytest.raises(StoreUnavailable):
        store.verify_purchase(token, PACK, CONSUMABLE)
    assert store.verify_purchase(token, PACK, CONSUMABLE).original_id == token  # the next try works


def test_retry_after_is_passed_on(play):
    token = play.add_product(PACK)
    play.answer(token, FakePlay.rate_limited(retry_after="120"))
    with pytest.raises(StoreUnavailable) as caught:
        store.verify_purchase(token, PACK, CONSUMABLE)
    assert caught.value.retry_after_seconds == 120


def test_a_timeout_is_retryable(play):
    token = play.add_subscription(PLAN)
    play.answer(token, FakePlay.timeout())
    with pytest.raises(StoreUnavailable):
        store.verify_purchase(token, PLAN, SUBSCRIPTION)


def test_a_connection_error_is_retryable_and_the_token_stays_out_of_the_log(play, caplog):
    token = play.add_product(PACK)
    play.answer(token, requests.ConnectionError(f"fake: connection reset for /tokens/{token}"))
    with caplog.at_level(logging.INFO), pytest.raises(StoreUnavailable):
        store.verify_purchase(token, PACK, CONSUMABLE)
    assert "ConnectionError" in caplog.text
    assert token not in caplog.text


def test_our_service_account_without_permission_is_retryable_and_an_error_in_the_log(play, caplog):
    token = play.add_product(PACK)
    play.answer(token, FakePlay.permission_denied())
    with caplog.at_level(logging.ERROR), pytest.raises(StoreUnavailable):
        store.verify_purchase(token, PACK, CONSUMABLE)
    assert "refused our service account" in caplog.text


def test_access_tokens_refused_by_the_api_are_retryable_and_an_error_in_the_log(play, caplog):
    play.accept_access_tokens = False
    with caplog.at_level(logging.ERROR), pytest.raises(StoreUnavailable):
        store.verify_purchase(play.add_product(PACK), PACK, CONSUMABLE)
    assert "HTTP 401" in caplog.text


def test_a_service_account_that_cannot_sign_in_is_retryable_and_an_error_in_the_log(
    play, google, settings, tmp_path, caplog
):
    info = google.service_account_info() | {"client_email": "someone-else@example.iam.gserviceaccount.com"}
    credentials = tmp_path / "wrong-account.json"
    credentials.write_text(json.dumps(info))
    settings.GOOGLE_PLAY_CREDENTIALS = str(credentials)
    with caplog.at_level(logging.ERROR), pytest.raises(StoreUnavailable):
        store.verify_purchase(play.add_product(PACK), PACK, CONSUMABLE)
    assert "sign-in" in caplog.text
    assert play.requests == []


@pytest.mark.parametrize(
    "body",
    [b"<html>502 Bad Gateway</html>", b"[1, 2]", b'{"kind": "androidpublisher#productPurchaseV2"}'],
    ids=["html", "not-an-object", "no-line-items"],
)
def test_an_answer_that_is_not_the_documented_json_is_retryable(play, body):
    token = play.add_product(PACK)
    play.answer(token, FakeResponse(headers={"Content-Type": "application/json"}, body=body))
    with pytest.raises(StoreUnavailable):
        store.verify_purchase(token, PACK, CONSUMABLE)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "x" * 4097,
        "é" * 2049,
        "token\nwith-newline",
        "tab\there",
        "nul\x00",
        "bidi\u202eoverride",
        "\ud800",
    ],
    ids=["empty", "over-4kb", "over-4kb-in-utf8", "newline", "tab", "nul", "format-char", "surrogate"],
)
def test_what_cannot_be_a_token_is_refused_before_google_is_asked(play, google, token):
    for product_type in (CONSUMABLE, SUBSCRIPTION):
        with pytest.raises(InvalidReceipt, match="not a Google Play purchase token"):
            store.verify_purchase(token, PACK, product_type)
    assert google.calls == []


def test_the_token_is_url_encoded_into_one_path_segment(play, google):
    token = play.add_product(PACK, token="a/b?c=d#e%f ..g")
    assert store.verify_purchase(token, PACK, CONSUMABLE).purchase_token == token
    [(_, url)] = play_calls(google)
    assert url == f"{PURCHASES}/productsv2/tokens/{urllib.parse.quote(token, safe='')}"


# --- Acknowledging and consuming -----------------------------------------------------------------------


def test_a_pack_is_consumed(play, google):
    token = play.add_product(PACK)
    transaction = store.verify_purchase(token, PACK, CONSUMABLE)

    store.acknowledge(transaction)

    assert play.consumed == [(PACK, token)]
    assert play_calls(google)[-1] == ("POST", f"{PURCHASES}/products/{PACK}/tokens/{token}:consume")
    assert play.requests[-1].body == b""
    assert store.verify_purchase(token, PACK, CONSUMABLE).acknowledged


def test_a_subscription_is_acknowledged(play, google):
    token = play.add_subscription(PLAN)
    transaction = store.verify_purchase(token, PLAN, SUBSCRIPTION)

    store.acknowledge(transaction)

    assert play.acknowledged == [(PLAN, token)]
    assert play_calls(google)[-1] == ("POST", f"{PURCHASES}/subscriptions/{PLAN}/tokens/{token}:acknowledge")
    assert json.loads(play.requests[-1].body) == {}
    assert store.verify_purchase(token, PLAN, SUBSCRIPTION).acknowledged


def test_a_transaction_google_reported_acknowledged_sends_nothing(play, google):
    transaction = store.verify_purchase(play.add_subscription(PLAN, acknowledged=True), PLAN, SUBSCRIPTION)
    calls = len(google.calls)
    store.acknowledge(transaction)
    assert len(google.calls) == calls
    assert play.acknowledged == []


@pytest.mark.parametrize("product_type", [CONSUMABLE, SUBSCRIPTION])
def test_acknowledging_twice_is_fine(play, product_type):
    if product_type == CONSUMABLE:
        token = play.add_product(PACK)
        transaction = store.verify_purchase(token, PACK, product_type)
    else:
        token = play.add_subscription(PLAN)
        transaction = store.verify_purchase(token, PLAN, product_type)

    store.acknowledge(transaction)
    store.acknowledge(transaction)  # the same stale transaction: Google refuses, the purchase shows it done

    assert len(play.consumed) + len(play.acknowledged) == 1


@pytest.mark.parametrize(
    "answer",
    [FakePlay.unavailable(), FakePlay.timeout(), FakePlay.rate_limited()],
    ids=["503", "timeout", "429"],
)
def test_acknowledging_when_google_fails_is_retryable(play, answer):
    token = play.add_subscription(PLAN)
    transaction = store.verify_purchase(token, PLAN, SUBSCRIPTION)
    play.answer(token, answer)
    with pytest.raises(StoreUnavailable):
        store.acknowledge(transaction)
    store.acknowledge(transaction)
    assert play.acknowledged == [(PLAN, token)]


def test_acknowledging_a_purchase_google_does_not_know_is_invalid(play):
    token = play.add_product(PACK)
    transaction = store.verify_purchase(token, PACK, CONSUMABLE)
    del play.products[token]
    with pytest.raises(InvalidReceipt):
        store.acknowledge(transaction)


# --- Authenticating pushes -----------------------------------------------------------------------------


def test_a_push_from_our_subscription_is_authenticated(play):
    claims = store.authenticate_push(play.authorization())
    assert claims["email"] == "pubsub-push@example.iam.gserviceaccount.com"
    assert claims["aud"] == "https://api.example.com/webhooks/google-play"
    assert claims["iss"] == "https://accounts.google.com"


def test_google_certificates_are_fetched_once_while_cached(play):
    for _ in range(3):
        store.authenticate_push(play.authorization())
    assert play.cert_fetches == 1


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer", "Token abc.def.ghi"]
)
def test_a_push_without_a_bearer_token_is_unauthorized(play, header):
    with pytest.raises(NotificationRejected) as caught:
        store.authenticate_push(header)
    assert caught.value.status == 401


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30", "x" * 20_000])
def test_a_garbled_token_is_unauthorized_without_fetching_certificates(play, token):
    with pytest.raises(NotificationRejected) as caught:
        store.authenticate_push(f"Bearer {token}")
    assert caught.value.status == 401
    assert play.cert_fetches == 0


@pytest.mark.parametrize(
    "options",
    [
        {"audience": "https://api.example.com/webhooks/app-store"},
        {"issued_at": int(dt.datetime(2020, 1, 1, tzinfo=dt.UTC).timestamp())},
        {"iss": "https://evil.example.com"},
        {"key": signing_key("forged-key"), "kid": "fake-google-oidc-1"},  # another key, the published kid
        {"kid": "unpublished-kid", "key": signing_key("unpublished-kid")},
    ],
    ids=["wrong-audience", "expired", "wrong-issuer", "forged-signature", "unknown-key"],
)
def test_a_token_that_does_not_verify_is_unauthorized(play, options):
    with pytest.raises(NotificationRejected) as caught:
        store.authenticate_push(play.authorization(**options))
    assert caught.value.status == 401


@pytest.mark.parametrize(
    "options",
    [{"email": "someone@example.iam.gserviceaccount.com"}, {"email_verified": False}],
    ids=["wrong-service-account", "email-not-verified"],
)
def test_a_valid_token_of_another_account_is_forbidden(play, options):
    with pytest.raises(NotificationRejected) as caught:
        store.authenticate_push(play.authorization(**options))
    assert caught.value.status == 403


def test_google_certificates_unavailable_is_retryable(play):
    play.certs_status = 503
    with pytest.raises(StoreUnavailable):
        store.authenticate_push(play.authorization())
    play.certs_status = 200
    assert store.authenticate_push(play.authorization())["email_verified"] is True


def test_push_without_audience_or_account_settings_is_a_server_error(play, settings):
    settings.GOOGLE_PLAY_PUSH_AUDIENCE = ""
    with pytest.raises(ImproperlyConfigured, match="GOOGLE_PLAY_PUSH_AUDIENCE"):
        store.authenticate_push(play.authorization())


# --- Parsing pushes ------------------------------------------------------------------------------------


SUBSCRIPTION_TYPES = {
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


@pytest.mark.parametrize(("number", "name"), SUBSCRIPTION_TYPES.items(), ids=SUBSCRIPTION_TYPES.values())
def test_a_subscription_notification_carries_the_subscription_as_google_reports_it_now(
    play, google, number, name
):
    token = play.add_subscription(PLAN, account_id=ACCOUNT)
    body = play.push_body(play.subscription_notification(token, number), message_id="4242")

    notice = store.parse_push(body)

    assert (notice.platform, notice.notification_id, notice.type) == ("ANDROID", "4242", name)
    [transaction] = notice.transactions
    assert transaction == store.verify_purchase(token, PLAN, SUBSCRIPTION)
    assert notice.raw["purchase_token"] == token
    assert notice.raw["message_id"] == "4242"
    assert notice.raw["notification"]["subscriptionNotification"]["notificationType"] == number
    assert play_calls(google)[0] == ("GET", f"{PURCHASES}/subscriptionsv2/tokens/{token}")


def test_a_renewal_notification_carries_the_new_order(play):
    token = play.add_subscription(PLAN, order_id="GPA.3312-7777-0000-00001")
    order_id = play.renew(token)
    notice = store.parse_push(play.push_body(play.subscription_notification(token, 2)))
    assert notice.type == "SUBSCRIPTION_RENEWED"
    assert notice.transactions[0].transaction_id == order_id == "GPA.3312-7777-0000-00001..0"


def test_a_cancellation_notification_keeps_access_until_the_period_ends(play):
    token = play.add_subscription(
        PLAN, state="CANCELED", auto_renew=False, expires_at=now() + dt.timedelta(days=9)
    )
    [transaction] = store.parse_push(play.push_body(play.subscription_notification(token, 3))).transactions
    assert (transaction.state, transaction.will_renew) == (SubscriptionState.ACTIVE, False)


def test_a_revocation_notification_revokes_at_the_event_time(play):
    token = play.add_subscription(PLAN, state="EXPIRED", auto_renew=False, expires_at=now())
    event = dt.datetime(2026, 5, 4, 12, 30, tzinfo=dt.UTC)
    notification = play.subscription_notification(token, 12, event_time_ms=int(event.timestamp() * 1000))

    notice = store.parse_push(play.push_body(notification))

    [transaction] = notice.transactions
    assert transaction.state == SubscriptionState.REVOKED
    assert transaction.revoked_at == event
    assert transaction.revocation_reason == "SUBSCRIPTION_REVOKED"
    assert transaction.will_renew is False


def test_a_notification_without_subscription_id_uses_the_purchase_line_item(play):
    token = play.add_subscription(PLAN)
    notification = play.subscription_notification(token, 4)
    del notification["subscriptionNotification"]["subscriptionId"]
    [transaction] = store.parse_push(play.push_body(notification)).transactions
    assert transaction.store_product_id == PLAN


def test_a_test_purchase_notice_is_sandbox(play):
    token = play.add_subscription(PLAN, test=True)
    notice = store.parse_push(play.push_body(play.subscription_notification(token, 4)))
    assert notice.environment == notice.transactions[0].environment == Environment.SANDBOX


def test_an_unknown_subscription_notification_type_still_fetches_the_subscription(play):
    token = play.add_subscription(PLAN)
    notice = store.parse_push(play.push_body(play.subscription_notification(token, 99)))
    assert notice.type == "SUBSCRIPTION_NOTIFICATION_99"
    assert len(notice.transactions) == 1


def test_a_one_time_product_purchased_notification_carries_the_purchase(play, google):
    token = play.add_product(PACK, account_id=ACCOUNT)
    notice = store.parse_push(play.push_body(play.one_time_notification(token, 1, PACK)))
    assert notice.type == "ONE_TIME_PRODUCT_PURCHASED"
    assert notice.transactions == (store.verify_purchase(token, PACK, CONSUMABLE),)
    assert notice.transactions[0].account_token == ACCOUNT


def test_a_one_time_product_canceled_notification_asks_google_nothing(play, google):
    token = play.add_product(PACK, state="CANCELLED")
    notice = store.parse_push(play.push_body(play.one_time_notification(token, 2, PACK)))
    assert (notice.type, notice.transactions) == ("ONE_TIME_PRODUCT_CANCELED", ())
    assert notice.raw["purchase_token"] == token
    assert play_calls(google) == []


def test_a_pending_purchase_notification_has_no_transaction_and_says_why(play):
    token = play.add_product(PACK, state="PENDING")
    notice = store.parse_push(play.push_body(play.one_time_notification(token, 1, PACK)))
    assert notice.transactions == ()
    assert "pending" in notice.raw["error"]


def test_a_notification_for_a_token_google_does_not_know_has_no_transaction(play):
    notice = store.parse_push(
        play.push_body(play.subscription_notification("unknown-token", 4, subscription_id=PLAN))
    )
    assert notice.type == "SUBSCRIPTION_PURCHASED"
    assert notice.transactions == ()
    assert notice.raw["error"] == "Google Play does not know this purchase for this app."


def test_a_notification_google_cannot_answer_for_is_retryable(play):
    token = play.add_subscription(PLAN)
    play.answer(token, FakePlay.unavailable())
    with pytest.raises(StoreUnavailable):
        store.parse_push(play.push_body(play.subscription_notification(token, 2)))


@pytest.mark.parametrize(
    ("refund_type", "subtype"),
    [(1, "FULL_REFUND"), (2, "QUANTITY_BASED_PARTIAL_REFUND")],
    ids=["full", "partial"],
)
def test_a_voided_purchase_names_its_order_and_asks_google_nothing(play, google, refund_type, subtype):
    token = play.add_product(PACK, order_id="GPA.3371-9999-8888-77777")
    notification = play.voided_notification(token, "GPA.3371-9999-8888-77777", refund_type=refund_type)

    notice = store.parse_push(play.push_body(notification, message_id="voided-1"))

    assert notice == StoreNotice(
        platform="ANDROID",
        notification_id="voided-1",
        type="VOIDED_PURCHASE",
        subtype=subtype,
        voided_transaction_ids=("GPA.3371-9999-8888-77777",),
        raw=notice.raw,
    )
    assert notice.raw["purchase_token"] == token
    assert notice.raw["notification"]["voidedPurchaseNotification"]["purchaseToken"] == token
    assert play_calls(google) == []


def test_a_voided_purchase_without_order_names_the_id_derived_from_its_token(play):
    token = play.add_product(PACK, with_order_id=False, test=True)
    transaction = store.verify_purchase(token, PACK, CONSUMABLE)
    notification = play.voided_notification(token, "")
    del notification["voidedPurchaseNotification"]["orderId"]
    notice = store.parse_push(play.push_body(notification))
    assert notice.voided_transaction_ids == (transaction.transaction_id,)


def test_a_test_notification_carries_nothing(play, google):
    notice = store.parse_push(play.push_body(play.test_notification(), message_id="test-1"))
    assert (notice.type, notice.notification_id, notice.transactions) == ("TEST", "test-1", ())
    assert google.calls == []


def test_a_notification_kind_added_later_is_kept_without_action(play, google):
    notification = play.developer_notification(pendingRefundReviewNotification={"purchaseToken": "t"})
    notice = store.parse_push(play.push_body(notification))
    assert (notice.type, notice.transactions) == ("UNKNOWN", ())
    assert google.calls == []


def test_the_snake_case_message_id_is_accepted(play):
    envelope = json.loads(play.push_body(play.test_notification(), message_id="snake-1"))
    del envelope["message"]["messageId"]
    assert store.parse_push(json.dumps(envelope).encode()).notification_id == "snake-1"


def test_a_notification_for_another_app_is_rejected(play, google):
    token = play.add_subscription(PLAN)
    body = play.push_body(play.subscription_notification(token, 4, package="com.example.other"))
    with pytest.raises(NotificationRejected) as caught:
        store.parse_push(body)
    assert (caught.value.status, caught.value.reason) == (400, "The notification is for another app.")
    assert google.calls == []


def _envelope(data: str | None = None, **message: object) -> bytes:
    body: dict = {"message": {"messageId": "1", **message}, "subscription": "projects/p/subscriptions/s"}
    if data is not None:
        body["message"]["data"] = data
    return json.dumps(body).encode()


def _data(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


NOTIFICATION = {"version": "1.0", "packageName": PACKAGE, "eventTimeMillis": "1700000000000"}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"message": "x"}',
        b'{"subscription": "projects/p/subscriptions/s"}',
        _envelope(),
        _envelope(data="%%% not base64 %%%"),
        _envelope(data=base64.b64encode(b"not json").decode()),
        _envelope(data=_data([1, 2])),
        _envelope(data=_data(NOTIFICATION), messageId=""),
        _envelope(data=_data(NOTIFICATION), messageId=7),
        _envelope(data=_data({**NOTIFICATION, "packageName": None})),
        _envelope(data=_data({**NOTIFICATION, "eventTimeMillis": "yesterday"})),
        _envelope(data=_data({**NOTIFICATION, "eventTimeMillis": "9" * 40})),
        _envelope(data=_data({**NOTIFICATION, "subscriptionNotification": "x"})),
        _envelope(data=_data({**NOTIFICATION, "subscriptionNotification": {"notificationType": "2"}})),
        _envelope(data=_data({**NOTIFICATION, "subscriptionNotification": {"notificationType": 2}})),
        _envelope(data=_data({**NOTIFICATION, "oneTimeProductNotification": {"purchaseToken": "t"}})),
        _envelope(data=_data({**NOTIFICATION, "voidedPurchaseNotification": {"orderId": "GPA.1"}})),
        b"{" * 100_000,
    ],
    ids=[
        "empty",
        "not-json",
        "not-utf8",
        "array",
        "message-not-object",
        "no-message",
        "no-data",
        "data-not-base64",
        "data-not-json",
        "data-not-object",
        "empty-message-id",
        "message-id-not-string",
        "no-package",
        "bad-event-time",
        "event-time-overflow",
        "notification-not-object",
        "type-not-int",
        "no-token",
        "one-time-no-type",
        "voided-no-token",
        "too-large",
    ],
)
def test_a_malformed_push_is_rejected(play, google, body):
    with pytest.raises(NotificationRejected) as caught:
        store.parse_push(body)
    assert caught.value.status in (400, 413)
    assert play_calls(google) == []


# --- Garbage in ----------------------------------------------------------------------------------------


def _garbage(rng: random.Random) -> str:
    alphabet = [chr(c) for c in range(0, 0x250)] + ["\u202e", "\ufeff", "\ud800", "/", "?", "#", "%", ".."]
    return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 40, 300, 5000])))


def test_garbage_tokens_only_ever_give_invalid_receipt(play):
    rng = random.Random(20261204)
    tokens = [_garbage(rng) for _ in range(150)] + [play.new_token() for _ in range(10)]
    for token in tokens:
        for product_type in (CONSUMABLE, SUBSCRIPTION):
            with pytest.raises(InvalidReceipt):
                store.verify_purchase(token, rng.choice([PACK, PLAN, _garbage(rng)]), product_type)


def _same_token(token: str, valid: str) -> bool:
    """Whether a mangled token is still the valid one for google-auth: the same signed text, and a
    signature that decodes to the same bytes (base64 decoding skips stray characters and unused bits)."""
    signed, _, signature = token.rpartition(".")
    valid_signed, _, valid_signature = valid.rpartition(".")

    def decoded(part: str) -> bytes | None:
        try:
            return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except ValueError:
            return None

    return signed == valid_signed and decoded(signature) == decoded(valid_signature)


def test_garbage_authorization_headers_only_ever_give_notification_rejected(play):
    rng = random.Random(7)
    valid = play.oidc_token()
    headers = [_garbage(rng) for _ in range(100)]
    headers += [f"Bearer {_garbage(rng)}" for _ in range(100)]
    for header in headers:
        with pytest.raises(NotificationRejected):
            store.authenticate_push(header)
    # A real token with characters replaced, dropped or added: refused unless it is still the same token.
    for _ in range(200):
        chars = list(valid)
        position = rng.randrange(len(chars))
        chars[position : position + rng.choice([0, 1, 3])] = rng.choice(["", "A", "_", ".", "x.y", "\x00"])
        token = "".join(chars)
        if _same_token(token, valid):
            assert store.authenticate_push(f"Bearer {token}")["email_verified"] is True
            continue
        with pytest.raises(NotificationRejected):
            store.authenticate_push(f"Bearer {token}")


def test_garbage_push_bodies_only_ever_give_notification_rejected_or_a_notice(play):
    rng = random.Random(11)
    token = play.add_subscription(PLAN)
    valid = json.loads(play.push_body(play.subscription_notification(token, 2)))
    notification = play.subscription_notification(token, 2)
    values = [None, True, 0, -1, 2**70, 1.5, "", "x", [], {}, [1], {"a": 1}, _garbage(rng)]
    bodies = [_garbage(rng).encode("utf-8", "surrogatepass") for _ in range(100)]
    for _ in range(300):
        envelope = json.loads(json.dumps(valid))
        broken = json.loads(json.dumps(notification))
        target = rng.choice(["envelope", "message", "notification", "kind"])
        if target == "envelope":
            envelope[rng.choice(["message", "subscription", "extra"])] = rng.choice(values)
        elif target == "message":
            envelope["message"][rng.choice(["data", "messageId", "message_id", "publishTime"])] = rng.choice(
                values
            )
        else:
            where = broken if target == "notification" else broken["subscriptionNotification"]
            where[rng.choice(list(where))] = rng.choice(values)
            envelope["message"]["data"] = _data(broken)
        bodies.append(json.dumps(envelope).encode())
    for body in bodies:
        try:
            notice = store.parse_push(body)
        except NotificationRejected as exc:
            assert exc.status in (400, 413)
        else:
            assert isinstance(notice, StoreNotice)
