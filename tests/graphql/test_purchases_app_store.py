"""App Store purchases end to end: StoreKit 2 signed transactions and Server Notifications V2 signed by a
test chain that the real app-store-server-library verifies, through the GraphQL API and the webhook."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from apps.accounts.models import User
from apps.credits.models import CreditEntry, EntryKind, Wallet
from apps.purchases.models import NotificationOutcome, Purchase, PurchaseStatus, StoreNotification
from tests.fakes.apple import DAY_MS, SUBSCRIPTION, SubscriptionStatus, now_ms

pytestmark = pytest.mark.django_db

VERIFY = """
mutation ($jws: String) {
  verifyPurchase(input: {platform: IOS, signedTransaction: $jws}) {
    __typename
    ... on PurchasePayload { wallet { balance } purchase { credits }
      plan { level status inGracePeriod willRenew } }
    ... on Error { code message }
  }
}
"""
RESTORE = """mutation { restorePurchases(platform: IOS) { __typename
  ... on PurchasePayload { wallet { balance } plan { level status } } ... on Error { code } } }"""
ME = "{ me { credits plan { level status inGracePeriod willRenew renewsAt } } }"
PACK = "com.example.diffuse.credits100"
BASIC = "com.example.diffuse.basic.monthly"
PRO = "com.example.diffuse.pro.monthly"


@pytest.fixture(autouse=True)
def catalogue(db) -> None:
    call_command("load_products", verbosity=0)


@pytest.fixture
def buyer(sign_up):
    auth = sign_up()
    user = User.objects.get(email=auth["user"]["email"])
    return auth["accessToken"], user


def verify(gql, token, jws) -> dict:
    return gql(VERIFY, {"jws": jws}, token)["data"]["verifyPurchase"]


def notify(client, signed_payload):
    return client.post(
        "/webhooks/app-store", json.dumps({"signedPayload": signed_payload}), content_type="application/json"
    )


def balance(user) -> int:
    return Wallet.objects.get(user=user).balance


def test_a_pack_bought_on_ios_grants_once_from_the_app_and_the_notification(gql, apple_store, buyer):
    token, user = buyer
    claims = apple_store.transaction_claims(productId=PACK, appAccountToken=str(user.pk))
    jws = apple_store.sign(claims)
    first = verify(gql, token, jws)
    assert first["__typename"] == "PurchasePayload", first
    assert first["wallet"]["balance"] == 120 and first["purchase"]["credits"] == 100
    assert verify(gql, token, jws)["wallet"]["balance"] == 120
    response = notify(gql.client, apple_store.signed_notification("ONE_TIME_CHARGE", transaction=claims))
    assert response.status_code == 200 and response.json() == {"outcome": "applied"}
    assert balance(user) == 120
    assert CreditEntry.objects.filter(wallet__user=user, kind=EntryKind.GRANT).count() == 2


def test_the_notification_first_then_the_app_grants_once(gql, apple_store, buyer):
    token, user = buyer
    claims = apple_store.transaction_claims(productId=PACK, appAccountToken=str(user.pk))
    assert notify(
        gql.client, apple_store.signed_notification("ONE_TIME_CHARGE", transaction=claims)
    ).json() == {"outcome": "applied"}
    assert balance(user) == 120
    assert verify(gql, token, apple_store.sign(claims))["wallet"]["balance"] == 120


def test_a_transaction_bound_to_another_account_is_refused(gql, apple_store, buyer, sign_up):
    token, user = buyer
    other = User.objects.get(email=sign_up()["user"]["email"])
    jws = apple_store.signed_transaction(productId=PACK, appAccountToken=str(other.pk))
    assert verify(gql, token, jws)["code"] == "RECEIPT_BELONGS_TO_ANOTHER_USER"
    assert balance(user) == 20 and balance(other) == 20 and not Purchase.objects.exists()


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(
            lambda store, jws: store.forged(jws, productId="com.example.diffuse.credits1000"), id="forged"
        ),
        pytest.param(lambda store, jws: jws[: len(jws) // 2], id="truncated"),
        pytest.param(lambda store, jws: "eyJhbGciOiJFUzI1NiJ9.e30.c2ln", id="not-apples"),
    ],
)
def test_forged_or_truncated_transactions_are_invalid_receipts(gql, apple_store, buyer, mangle):
    token, user = buyer
    jws = apple_store.signed_transaction(productId=PACK, appAccountToken=str(user.pk))
    result = verify(gql, token, mangle(apple_store, jws))
    assert result["code"] == "INVALID_RECEIPT", result
    assert balance(user) == 20


def test_another_apps_transaction_is_an_invalid_receipt(gql, apple_store, buyer):
    token, user = buyer
    jws = apple_store.signed_transaction(
        productId=PACK, bundleId="com.other.app", appAccountToken=str(user.pk)
    )
    assert verify(gql, token, jws)["code"] == "INVALID_RECEIPT"


def test_an_unknown_product_is_product_unknown(gql, apple_store, buyer):
    token, user = buyer
    jws = apple_store.signed_transaction(productId="com.example.diffuse.gems", appAccountToken=str(user.pk))
    assert verify(gql, token, jws)["code"] == "PRODUCT_UNKNOWN"


def test_sandbox_purchases_grant_only_where_sandbox_is_allowed(gql, apple_store, buyer, settings):
    token, user = buyer
    jws = apple_store.signed_transaction(productId=PACK, environment="Sandbox", appAccountToken=str(user.pk))
    settings.APPLE_ALLOW_SANDBOX = False
    refused = verify(gql, token, jws)
    assert refused["code"] == "INVALID_RECEIPT" and "Sandbox" in refused["message"]
    assert balance(user) == 20
    settings.APPLE_ALLOW_SANDBOX = True  # App Review's build
    assert verify(gql, token, jws)["wallet"]["balance"] == 120
    assert Purchase.objects.get().environment == "sandbox"


def test_the_store_unreachable_is_store_unavailable_and_grants_nothing(gql, apple_store, buyer, settings):
    token, user = buyer
    settings.APPLE_ONLINE_CHECKS = True
    apple_store.ocsp_status = 503
    result = verify(gql, token, apple_store.signed_transaction(productId=PACK, appAccountToken=str(user.pk)))
    assert result["code"] == "STORE_UNAVAILABLE"
    assert balance(user) == 20 and not Purchase.objects.exists()


def test_a_plan_renews_goes_into_grace_and_expires(gql, apple_store, buyer):
    token, user = buyer
    first = apple_store.transaction_claims(type=SUBSCRIPTION, productId=BASIC, appAccountToken=str(user.pk))
    bought = verify(gql, token, apple_store.sign(first))
    assert bought["plan"] == {"level": 1, "status": "ACTIVE", "inGracePeriod": False, "willRenew": True}
    assert bought["wallet"]["balance"] == 220

    original = first["originalTransactionId"]
    renewal = apple_store.transaction_claims(
        type=SUBSCRIPTION,
        productId=BASIC,
        originalTransactionId=original,
        appAccountToken=str(user.pk),
        purchaseDate=now_ms() + 1000,
    )
    assert notify(
        gql.client, apple_store.signed_notification("DID_RENEW", transaction=renewal, renewal={})
    ).json() == {"outcome": "applied"}
    assert balance(user) == 420

    grace = apple_store.signed_notification(
        "DID_FAIL_TO_RENEW",
        "GRACE_PERIOD",
        transaction=renewal,
        renewal={"isInBillingRetryPeriod": True, "gracePeriodExpiresDate": now_ms() + 6 * DAY_MS},
    )
    notify(gql.client, grace)
    plan = gql(ME, token=token)["data"]["me"]["plan"]
    assert plan["status"] == "GRACE_PERIOD" and plan["inGracePeriod"] is True

    expired = {**renewal, "expiresDate": now_ms() - 1000}
    notify(
        gql.client,
        apple_store.signed_notification(
            "EXPIRED", "VOLUNTARY", transaction=expired, renewal={"autoRenewStatus": 0}
        ),
    )
    assert gql(ME, token=token)["data"]["me"]["plan"] is None
    assert balance(user) == 420  # credits of the periods paid for stay


def test_an_upgrade_moves_the_plan_to_the_higher_level_at_once(gql, apple_store, buyer):
    token, user = buyer
    basic = apple_store.transaction_claims(type=SUBSCRIPTION, productId=BASIC, appAccountToken=str(user.pk))
    verify(gql, token, apple_store.sign(basic))
    pro = apple_store.transaction_claims(
        type=SUBSCRIPTION,
        productId=PRO,
        originalTransactionId=basic["originalTransactionId"],
        appAccountToken=str(user.pk),
        purchaseDate=now_ms() + 1000,
    )
    upgraded = verify(gql, token, apple_store.sign(pro))
    assert upgraded["plan"]["level"] == 2
    assert upgraded["wallet"]["balance"] == 20 + 200 + 600


def test_a_refund_takes_back_the_unspent_credits_and_records_what_is_owed(gql, apple_store, buyer):
    token, user = buyer
    claims = apple_store.transaction_claims(productId=PACK, appAccountToken=str(user.pk))
    verify(gql, token, apple_store.sign(claims))
    Wallet.objects.filter(user=user).update(balance=50)  # 70 spent meanwhile
    refunded = {**claims, "revocationDate": now_ms(), "revocationReason": 0}
    response = notify(gql.client, apple_store.signed_notification("REFUND", transaction=refunded))
    assert response.json() == {"outcome": "applied"}
    wallet = Wallet.objects.get(user=user)
    assert (wallet.balance, wallet.owed) == (0, 50)
    purchase = Purchase.objects.get()
    assert purchase.status == PurchaseStatus.REFUNDED and (
        purchase.credits_taken_back,
        purchase.credits_owed,
    ) == (50, 50)
    # The app sending the (now revoked) transaction again grants nothing.
    assert verify(gql, token, apple_store.sign(refunded))["wallet"]["balance"] == 0


def test_forged_notifications_get_a_400_and_replays_change_nothing(client, apple_store, buyer):
    _, user = buyer
    claims = apple_store.transaction_claims(productId=PACK, appAccountToken=str(user.pk))
    signed = apple_store.signed_notification("ONE_TIME_CHARGE", transaction=claims)
    assert notify(client, apple_store.forged(signed, notificationType="REFUND")).status_code == 400
    assert notify(client, "not-a-jws").status_code == 400
    assert client.post("/webhooks/app-store", "{}", content_type="application/json").status_code == 400
    assert not StoreNotification.objects.exists()
    assert notify(client, signed).json() == {"outcome": "applied"}
    assert notify(client, signed).json() == {"outcome": "duplicate"}
    assert balance(user) == 120


def test_a_notification_for_an_unknown_user_is_recorded_and_acknowledged(client, apple_store):
    claims = apple_store.transaction_claims(
        productId=PACK, appAccountToken="6f0c9d0e-0000-4000-8000-000000000000"
    )
    response = notify(client, apple_store.signed_notification("ONE_TIME_CHARGE", transaction=claims))
    assert response.status_code == 200 and response.json() == {"outcome": "ignored"}
    assert StoreNotification.objects.get().outcome == NotificationOutcome.IGNORED
    assert not Purchase.objects.exists()


def test_an_unreachable_store_during_a_notification_asks_apple_to_redeliver(
    client, apple_store, buyer, settings
):
    _, user = buyer
    signed = apple_store.signed_notification(
        "ONE_TIME_CHARGE",
        transaction=apple_store.transaction_claims(productId=PACK, appAccountToken=str(user.pk)),
    )
    settings.APPLE_ONLINE_CHECKS = True
    apple_store.ocsp_status = 503
    assert notify(client, signed).status_code == 503
    apple_store.ocsp_status = 200
    assert notify(client, signed).json() == {"outcome": "applied"}  # the redelivery applies it
    assert balance(user) == 120


def test_restore_rereads_the_history_and_grants_a_renewal_the_server_missed(gql, apple_server_api, buyer):
    token, user = buyer
    store = apple_server_api
    first = store.transaction_claims(type=SUBSCRIPTION, productId=BASIC, appAccountToken=str(user.pk))
    verify(gql, token, store.sign(first))
    renewal = store.transaction_claims(
        type=SUBSCRIPTION,
        productId=BASIC,
        originalTransactionId=first["originalTransactionId"],
        appAccountToken=str(user.pk),
        purchaseDate=now_ms() + 1000,
    )
    store.history = [store.sign(first), store.sign(renewal)]
    store.statuses = [
        SubscriptionStatus(
            status=1,
            signed_transaction=store.sign(renewal),
            signed_renewal_info=store.signed_renewal_info(
                originalTransactionId=first["originalTransactionId"],
                productId=BASIC,
                autoRenewProductId=BASIC,
            ),
        )
    ]
    restored = gql(RESTORE, token=token)["data"]["restorePurchases"]
    assert restored["__typename"] == "PurchasePayload", restored
    assert restored["wallet"]["balance"] == 420 and restored["plan"] == {"level": 1, "status": "ACTIVE"}
    assert gql(RESTORE, token=token)["data"]["restorePurchases"]["wallet"]["balance"] == 420


def test_restore_while_apple_is_down_is_store_unavailable(gql, apple_server_api, buyer):
    token, user = buyer
    verify(gql, token, apple_server_api.signed_transaction(productId=PACK, appAccountToken=str(user.pk)))
    apple_server_api.api_status = 503
    assert gql(RESTORE, token=token)["data"]["restorePurchases"]["code"] == "STORE_UNAVAILABLE"


def test_a_downgrade_takes_effect_at_the_next_renewal(gql, apple_store, buyer):
    token, user = buyer
    pro = apple_store.transaction_claims(type=SUBSCRIPTION, productId=PRO, appAccountToken=str(user.pk))
    verify(gql, token, apple_store.sign(pro))
    original = pro["originalTransactionId"]
    # The user picks the lower plan: Apple says so in the renewal info; the paid period stays Pro.
    notify(
        gql.client,
        apple_store.signed_notification(
            "DID_CHANGE_RENEWAL_PREF", "DOWNGRADE", transaction=pro, renewal={"autoRenewProductId": BASIC}
        ),
    )
    assert gql(ME, token=token)["data"]["me"]["plan"]["level"] == 2
    assert balance(user) == 620
    renewal = apple_store.transaction_claims(
        type=SUBSCRIPTION,
        productId=BASIC,
        originalTransactionId=original,
        appAccountToken=str(user.pk),
        purchaseDate=now_ms() + 1000,
    )
    notify(gql.client, apple_store.signed_notification("DID_RENEW", transaction=renewal, renewal={}))
    assert gql(ME, token=token)["data"]["me"]["plan"]["level"] == 1
    assert balance(user) == 620 + 200  # the renewal grants the lower plan's credits
