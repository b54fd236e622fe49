"""Buying credits through the API with the local test store (the embedded mode's demo): the real services,
ledger and notification endpoint; only the store's verification is the local one."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from apps.accounts.models import User
from apps.credits.models import Wallet
from apps.purchases.models import Purchase, PurchaseStatus, StoreNotification

pytestmark = pytest.mark.django_db

PRODUCTS = """
query ($platform: Platform!) { products(platform: $platform) { id storeProductId kind credits level } }
"""
VERIFY = """
mutation ($input: VerifyPurchaseInput!) {
  verifyPurchase(input: $input) {
    __typename
    ... on PurchasePayload {
      wallet { balance held }
      plan { level status willRenew inGracePeriod renewsAt }
      purchase { storeProductId credits status transactionId }
    }
    ... on Error { code message }
    ... on ValidationError { field }
  }
}
"""
ME = "{ me { credits plan { level status willRenew inGracePeriod renewsAt expiresAt creditsPerPeriod } } }"
PACK = "com.example.diffuse.credits100"
PLAN = "com.example.diffuse.basic.monthly"


@pytest.fixture(autouse=True)
def catalogue(db) -> None:
    call_command("load_products", verbosity=0)


def verify(gql, token, **input) -> dict:
    return gql(VERIFY, {"input": {"platform": "IOS", **input}}, token)["data"]["verifyPurchase"]


def notify(client, **body):
    return client.post("/webhooks/local-test-store", json.dumps(body), content_type="application/json")


def test_the_paywall_lists_each_platforms_products_in_order(gql):
    ios = gql(PRODUCTS, {"platform": "IOS"})["data"]["products"]
    android = gql(PRODUCTS, {"platform": "ANDROID"})["data"]["products"]
    assert [p["storeProductId"] for p in ios][:2] == [PACK, "com.example.diffuse.credits300"]
    assert [p["storeProductId"] for p in android][0] == "credits_100"
    assert [(p["kind"], p["credits"], p["level"]) for p in ios] == [
        ("CREDIT_PACK", 100, 0),
        ("CREDIT_PACK", 300, 0),
        ("CREDIT_PACK", 1000, 0),
        ("SUBSCRIPTION", 200, 1),
        ("SUBSCRIPTION", 600, 2),
    ]


def test_a_pack_grants_once_however_often_it_is_sent(gql, sign_up):
    auth = sign_up()
    receipt = f"local-test:{PACK}:order-1"
    first = verify(gql, auth["accessToken"], signedTransaction=receipt)
    assert first["__typename"] == "PurchasePayload", first
    assert first["wallet"]["balance"] == 20 + 100  # the welcome credits and the pack
    assert first["purchase"] == {
        "storeProductId": PACK,
        "credits": 100,
        "status": "GRANTED",
        "transactionId": receipt,
    }
    again = verify(gql, auth["accessToken"], signedTransaction=receipt)
    assert again["wallet"]["balance"] == 120
    # And through the store's notification door: the purchase is known, nothing more is granted.
    assert Purchase.objects.filter(transaction_id=receipt).count() == 1


def test_a_receipt_used_by_one_account_is_refused_to_another(gql, sign_up):
    receipt = f"local-test:{PACK}:order-2"
    assert verify(gql, sign_up()["accessToken"], signedTransaction=receipt)["__typename"] == "PurchasePayload"
    other = sign_up()
    refused = verify(gql, other["accessToken"], signedTransaction=receipt)
    assert refused["code"] == "RECEIPT_BELONGS_TO_ANOTHER_USER"
    assert gql(ME, token=other["accessToken"])["data"]["me"]["credits"] == 20


@pytest.mark.parametrize(
    ("input", "typename", "code"),
    [
        ({"signedTransaction": "local-test:com.example.unknown:x"}, "ProductUnknown", "PRODUCT_UNKNOWN"),
        ({"signedTransaction": "local-test:"}, "InvalidReceipt", "INVALID_RECEIPT"),
        ({"signedTransaction": "not-a-receipt"}, "InvalidReceipt", "INVALID_RECEIPT"),
        ({}, "ValidationError", "VALIDATION"),
        ({"signedTransaction": "x" * 70_000}, "InvalidReceipt", "INVALID_RECEIPT"),
    ],
)
def test_bad_receipts_get_a_typed_error_and_grant_nothing(gql, sign_up, input, typename, code):
    auth = sign_up()
    result = verify(gql, auth["accessToken"], **input)
    assert (result["__typename"], result["code"]) == (typename, code), result
    assert gql(ME, token=auth["accessToken"])["data"]["me"]["credits"] == 20
    assert not Purchase.objects.exists()


def test_android_needs_the_token_and_the_product_id(gql, sign_up):
    auth = sign_up()
    result = gql(
        VERIFY,
        {"input": {"platform": "ANDROID", "purchaseToken": "local-test:credits_100:a"}},
        auth["accessToken"],
    )["data"]["verifyPurchase"]
    assert (result["__typename"], result["field"]) == ("ValidationError", "productId")
    ok = gql(
        VERIFY,
        {
            "input": {
                "platform": "ANDROID",
                "purchaseToken": "local-test:credits_100:a",
                "productId": "credits_100",
            }
        },
        auth["accessToken"],
    )["data"]["verifyPurchase"]
    assert ok["wallet"]["balance"] == 120


def test_without_the_local_store_a_local_receipt_is_not_a_receipt(gql, sign_up, settings):
    settings.PURCHASES_LOCAL_TEST_STORE = False
    auth = sign_up()
    result = verify(gql, auth["accessToken"], signedTransaction=f"local-test:{PACK}:x")
    assert result["code"] == "INVALID_RECEIPT"
    assert notify(gql.client, type="REFUND", receipt=f"local-test:{PACK}:x").status_code == 404


def test_signed_out_callers_cannot_verify(gql):
    errors = gql(VERIFY, {"input": {"platform": "IOS", "signedTransaction": f"local-test:{PACK}:x"}})[
        "errors"
    ]
    assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_a_refund_takes_back_what_is_unspent_and_records_the_rest_as_owed(gql, sign_up):
    auth = sign_up()
    user = User.objects.get(email=auth["user"]["email"])
    receipt = f"local-test:{PACK}:order-3"
    verify(gql, auth["accessToken"], signedTransaction=receipt)  # 120
    Wallet.objects.filter(user=user).update(
        balance=30
    )  # as if 90 were spent (the ledger test checks spending)
    response = notify(gql.client, type="REFUND", receipt=receipt, id="refund-1")
    assert response.status_code == 200 and response.json() == {"outcome": "applied"}
    wallet = Wallet.objects.get(user=user)
    assert (wallet.balance, wallet.owed) == (0, 70)
    purchase = Purchase.objects.get(transaction_id=receipt)
    assert (purchase.status, purchase.credits_taken_back, purchase.credits_owed) == (
        PurchaseStatus.REFUNDED,
        30,
        70,
    )
    # The same notification again, and the app sending the receipt again, change nothing.
    assert notify(gql.client, type="REFUND", receipt=receipt, id="refund-1").json() == {
        "outcome": "duplicate"
    }
    assert notify(gql.client, type="REFUND", receipt=receipt, id="refund-2").json() == {"outcome": "applied"}
    assert verify(gql, auth["accessToken"], signedTransaction=receipt)["wallet"]["balance"] == 0
    assert Wallet.objects.get(user=user).owed == 70
    assert StoreNotification.objects.get(notification_id="refund-1").attempts == 2


def test_a_plan_grants_each_period_and_follows_its_state(gql, sign_up):
    auth = sign_up()
    token = auth["accessToken"]
    receipt = f"local-test:{PLAN}:sub-1"
    bought = verify(gql, token, signedTransaction=receipt)
    assert bought["wallet"]["balance"] == 220
    assert (
        bought["plan"]["level"] == 1 and bought["plan"]["status"] == "ACTIVE" and bought["plan"]["willRenew"]
    )
    assert notify(gql.client, type="DID_RENEW", receipt=receipt, period=2).json() == {"outcome": "applied"}
    assert notify(gql.client, type="DID_RENEW", receipt=receipt, period=2).json() == {"outcome": "duplicate"}
    me = gql(ME, token=token)["data"]["me"]
    assert me["credits"] == 420 and me["plan"]["creditsPerPeriod"] == 200
    notify(gql.client, type="DID_CHANGE_RENEWAL_STATUS", receipt=receipt, period=2, will_renew=False)
    plan = gql(ME, token=token)["data"]["me"]["plan"]
    assert plan["willRenew"] is False and plan["renewsAt"] is None and plan["expiresAt"]
    notify(gql.client, type="EXPIRED", receipt=receipt, period=2)
    assert gql(ME, token=token)["data"]["me"]["plan"] is None
    assert gql(ME, token=token)["data"]["me"]["credits"] == 420  # credits of paid periods stay


def test_notifications_that_are_not_the_stores_get_a_4xx_and_change_nothing(client):
    assert client.post("/webhooks/local-test-store", "{", content_type="application/json").status_code == 400
    assert notify(client, type="NOPE", receipt=f"local-test:{PACK}:x").status_code == 400
    assert client.get("/webhooks/local-test-store").status_code == 405
    assert not StoreNotification.objects.exists()


def test_a_notification_for_a_purchase_no_account_made_is_recorded_and_acknowledged(client):
    response = notify(client, type="REFUND", receipt=f"local-test:{PACK}:never-verified", id="n-1")
    assert response.json() == {"outcome": "ignored"}
    assert StoreNotification.objects.get(notification_id="n-1").detail
