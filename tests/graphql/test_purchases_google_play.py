"""Google Play purchases end to end: purchase tokens verified with the (fake, at the HTTP edge) Android
Publisher API through the real google-auth, acknowledgements, and Real-time Developer Notifications by
Pub/Sub push with an OIDC token, through the GraphQL API and the webhook."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.core.management import call_command

from apps.accounts.models import User
from apps.credits.models import Wallet
from apps.purchases.models import Purchase, PurchaseStatus, StoreNotification, Subscription
from apps.purchases.services import purchase_acknowledge
from apps.purchases.stores import SubscriptionState
from apps.purchases.tasks import purchases_acknowledge_sweep

pytestmark = pytest.mark.django_db

VERIFY = """
mutation ($token: String, $product: String) {
  verifyPurchase(input: {platform: ANDROID, purchaseToken: $token, productId: $product}) {
    __typename
    ... on PurchasePayload { wallet { balance } plan { level status willRenew } purchase { credits } }
    ... on Error { code message }
    ... on StoreUnavailable { retryAfterSeconds }
  }
}
"""
RESTORE = """mutation { restorePurchases(platform: ANDROID) { __typename
  ... on PurchasePayload { wallet { balance } plan { level status } } ... on Error { code } } }"""
ME = "{ me { credits plan { level status inGracePeriod willRenew } } }"
PACK, BASIC, PRO = "credits_100", "basic_monthly", "pro_monthly"


@pytest.fixture(autouse=True)
def catalogue(db) -> None:
    call_command("load_products", verbosity=0)


@pytest.fixture
def buyer(sign_up):
    auth = sign_up()
    return auth["accessToken"], User.objects.get(email=auth["user"]["email"])


def verify(gql, token, purchase_token, product) -> dict:
    return gql(VERIFY, {"token": purchase_token, "product": product}, token)["data"]["verifyPurchase"]


def push(client, play, notification, **token_options):
    return client.post(
        "/webhooks/google-play",
        play.push_body(notification),
        content_type="application/json",
        HTTP_AUTHORIZATION=play.authorization(**token_options),
    )


def balance(user) -> int:
    return Wallet.objects.get(user=user).balance


def test_a_pack_grants_once_and_is_consumed(gql, play, buyer, django_capture_on_commit_callbacks):
    token, user = buyer
    purchase_token = play.add_product(PACK, account_id=str(user.pk))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = verify(gql, token, purchase_token, PACK)
    assert first["__typename"] == "PurchasePayload", first
    assert first["wallet"]["balance"] == 120
    assert verify(gql, token, purchase_token, PACK)["wallet"]["balance"] == 120
    # The RTDN for the same purchase grants nothing more.
    response = push(gql.client, play, play.one_time_notification(purchase_token, 1, PACK))
    assert response.status_code == 200 and balance(user) == 120
    # Acknowledgement: sent after the commit to a backend actor, which consumes the pack at Google.
    assert callbacks, "no acknowledgement was scheduled"
    purchase = Purchase.objects.get()
    purchase_acknowledge(purchase_id=str(purchase.pk))
    assert play.consumed == [(PACK, purchase_token)]
    purchase.refresh_from_db()
    assert purchase.acknowledged_at is not None


def test_a_token_bound_to_another_account_is_refused(gql, play, buyer, sign_up):
    token, user = buyer
    other = User.objects.get(email=sign_up()["user"]["email"])
    purchase_token = play.add_product(PACK, account_id=str(other.pk))
    assert verify(gql, token, purchase_token, PACK)["code"] == "RECEIPT_BELONGS_TO_ANOTHER_USER"
    assert balance(user) == 20 and not Purchase.objects.exists()


def test_a_token_google_does_not_know_is_an_invalid_receipt(gql, play, buyer):
    token, user = buyer
    assert verify(gql, token, "made-up-token", PACK)["code"] == "INVALID_RECEIPT"
    assert balance(user) == 20


def test_a_token_for_another_product_is_an_invalid_receipt(gql, play, buyer):
    token, user = buyer
    purchase_token = play.add_product(PACK, account_id=str(user.pk))
    assert verify(gql, token, purchase_token, "credits_300")["code"] == "INVALID_RECEIPT"


def test_a_pending_payment_grants_nothing_yet(gql, play, buyer):
    token, user = buyer
    purchase_token = play.add_product(PACK, account_id=str(user.pk), state="PENDING")
    result = verify(gql, token, purchase_token, PACK)
    assert result["code"] == "INVALID_RECEIPT" and "pending" in result["message"].lower()


def test_an_unknown_product_id_is_product_unknown(gql, play, buyer):
    token, _ = buyer
    assert verify(gql, token, play.add_product("gems_50"), "gems_50")["code"] == "PRODUCT_UNKNOWN"


def test_google_timing_out_is_store_unavailable_and_grants_nothing(gql, play, buyer):
    token, user = buyer
    purchase_token = play.add_product(PACK, account_id=str(user.pk))
    play.answer(purchase_token, play.timeout())
    result = verify(gql, token, purchase_token, PACK)
    assert result["code"] == "STORE_UNAVAILABLE" and result["retryAfterSeconds"] > 0
    assert balance(user) == 20
    assert verify(gql, token, purchase_token, PACK)["wallet"]["balance"] == 120  # the retry works


def test_license_testers_grant_only_where_test_purchases_are_allowed(gql, play, buyer, settings):
    token, user = buyer
    purchase_token = play.add_product(PACK, account_id=str(user.pk), test=True)
    settings.GOOGLE_PLAY_ALLOW_TEST_PURCHASES = False
    assert verify(gql, token, purchase_token, PACK)["code"] == "INVALID_RECEIPT"
    settings.GOOGLE_PLAY_ALLOW_TEST_PURCHASES = True
    assert verify(gql, token, purchase_token, PACK)["wallet"]["balance"] == 120


def test_a_plan_renews_through_notifications_and_follows_its_state(gql, play, buyer):
    token, user = buyer
    purchase_token = play.add_subscription(BASIC, account_id=str(user.pk))
    bought = verify(gql, token, purchase_token, BASIC)
    assert bought["plan"] == {"level": 1, "status": "ACTIVE", "willRenew": True}
    assert bought["wallet"]["balance"] == 220

    play.renew(purchase_token)
    assert (
        push(gql.client, play, play.subscription_notification(purchase_token, 2)).status_code == 200
    )  # RENEWED
    assert balance(user) == 420

    play.set_subscription_state(purchase_token, "IN_GRACE_PERIOD")
    push(gql.client, play, play.subscription_notification(purchase_token, 6))  # IN_GRACE_PERIOD
    plan = gql(ME, token=token)["data"]["me"]["plan"]
    assert plan["status"] == "GRACE_PERIOD" and plan["inGracePeriod"] is True

    play.set_subscription_state(purchase_token, "ON_HOLD")
    push(gql.client, play, play.subscription_notification(purchase_token, 5))  # ON_HOLD
    assert gql(ME, token=token)["data"]["me"]["plan"]["status"] == "BILLING_RETRY"

    play.set_subscription_state(
        purchase_token, "EXPIRED", expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    )
    push(gql.client, play, play.subscription_notification(purchase_token, 13))  # EXPIRED
    assert gql(ME, token=token)["data"]["me"]["plan"] is None
    assert balance(user) == 420


def test_an_upgrade_replaces_the_old_token_and_grants_the_new_plan(gql, play, buyer):
    token, user = buyer
    basic = play.add_subscription(BASIC, account_id=str(user.pk))
    verify(gql, token, basic, BASIC)
    pro = play.add_subscription(PRO, account_id=str(user.pk), linked_purchase_token=basic)
    upgraded = verify(gql, token, pro, PRO)
    assert upgraded["plan"]["level"] == 2 and upgraded["wallet"]["balance"] == 20 + 200 + 600
    old = Subscription.objects.get(original_id=basic)
    assert old.state == SubscriptionState.EXPIRED and old.replaced_by == pro


def test_a_voided_purchase_takes_back_what_is_unspent(gql, play, buyer):
    token, user = buyer
    purchase_token = play.add_product(PACK, account_id=str(user.pk))
    verify(gql, token, purchase_token, PACK)
    Wallet.objects.filter(user=user).update(balance=40)  # 80 spent
    order_id = Purchase.objects.get().transaction_id
    response = push(gql.client, play, play.voided_notification(purchase_token, order_id, product_type=2))
    assert response.status_code == 200 and response.json() == {"outcome": "applied"}
    wallet = Wallet.objects.get(user=user)
    assert (wallet.balance, wallet.owed) == (0, 60)
    assert Purchase.objects.get().status == PurchaseStatus.REFUNDED


@pytest.mark.parametrize(
    ("token_options", "status"),
    [
        ({"audience": "https://attacker.example/push"}, 401),
        ({"email": "someone@example.iam.gserviceaccount.com"}, 403),
        ({"issued_at": int(time.time()) - 7200}, 401),  # expired an hour ago
    ],
)
def test_pushes_that_are_not_from_our_subscription_are_refused(client, play, buyer, token_options, status):
    _, user = buyer
    purchase_token = play.add_product(PACK, account_id=str(user.pk))
    response = push(client, play, play.one_time_notification(purchase_token, 1, PACK), **token_options)
    assert response.status_code == status
    assert not StoreNotification.objects.exists() and balance(user) == 20


def test_a_push_without_a_token_is_refused(client, play):
    response = client.post(
        "/webhooks/google-play", play.push_body(play.test_notification()), content_type="application/json"
    )
    assert response.status_code == 401


def test_a_replayed_push_changes_nothing(client, play, buyer):
    _, user = buyer
    purchase_token = play.add_product(PACK, account_id=str(user.pk))
    body = play.push_body(play.one_time_notification(purchase_token, 1, PACK), message_id="m-1")
    headers = {"HTTP_AUTHORIZATION": play.authorization()}
    for expected in ("applied", "duplicate"):
        response = client.post("/webhooks/google-play", body, content_type="application/json", **headers)
        assert response.json() == {"outcome": expected}
    assert balance(user) == 120


def test_google_down_during_a_push_asks_pubsub_to_redeliver(client, play, buyer):
    _, user = buyer
    purchase_token = play.add_product(PACK, account_id=str(user.pk))
    body = play.push_body(play.one_time_notification(purchase_token, 1, PACK), message_id="m-2")
    play.answer(purchase_token, play.unavailable())
    headers = {"HTTP_AUTHORIZATION": play.authorization()}
    assert (
        client.post("/webhooks/google-play", body, content_type="application/json", **headers).status_code
        == 503
    )
    assert balance(user) == 20
    response = client.post("/webhooks/google-play", body, content_type="application/json", **headers)
    assert response.json() == {"outcome": "applied"} and balance(user) == 120


def test_a_push_for_a_purchase_of_no_known_account_is_acknowledged(client, play):
    purchase_token = play.add_product(PACK)  # no account id, never verified by an app
    response = push(client, play, play.one_time_notification(purchase_token, 1, PACK))
    assert response.status_code == 200 and response.json() == {"outcome": "ignored"}


def test_restore_rereads_the_plans_state(gql, play, buyer):
    token, user = buyer
    purchase_token = play.add_subscription(BASIC, account_id=str(user.pk))
    verify(gql, token, purchase_token, BASIC)
    play.renew(purchase_token)  # a renewal whose notification never arrived
    restored = gql(RESTORE, token=token)["data"]["restorePurchases"]
    assert restored["wallet"]["balance"] == 420 and restored["plan"] == {"level": 1, "status": "ACTIVE"}


def test_the_sweep_acknowledges_what_is_still_due(play, buyer, gql, settings):
    token, user = buyer
    purchase_token = play.add_product(PACK, account_id=str(user.pk))
    verify(gql, token, purchase_token, PACK)
    Purchase.objects.update(created_at=Purchase.objects.get().created_at - dt.timedelta(hours=1))
    assert purchases_acknowledge_sweep() == 1
