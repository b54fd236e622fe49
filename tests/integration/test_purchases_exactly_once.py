"""Exactly once, on PostgreSQL through a live ASGI server: one store charge sent by 8 parallel
verifyPurchase requests and the store's notification at the same moment grants its credits once; the
wallet subscription shows the new balance at once. Uses the local test store (the signature checks of the
real stores are tested in tests/apps/purchases; the race is in the services and the database)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from django.core.management import call_command

from apps.accounts.models import User
from apps.credits.models import CreditEntry, EntryKind, Wallet
from apps.purchases.models import Purchase, StoreNotification
from tests.fixtures.live import http_graphql

pytestmark = [pytest.mark.services]

SIGN_UP = """
mutation ($email: String!) { signUp(input: {email: $email, password: "a-long-test-password-42"}) {
  ... on AuthPayload { accessToken } } }
"""
VERIFY = """
mutation ($receipt: String!) { verifyPurchase(input: {platform: IOS, signedTransaction: $receipt}) {
  __typename ... on PurchasePayload { wallet { balance } } ... on Error { code } } }
"""
WALLET = "subscription { walletUpdated { balance held } }"
PACK = "com.example.diffuse.credits100"
RACERS = 8


def test_eight_parallel_verifications_and_a_notification_grant_once(asgi_server, ws_client):
    call_command("load_products", verbosity=0)
    email = f"race-{time.monotonic_ns()}@example.com"
    token = http_graphql(asgi_server.url, SIGN_UP, {"email": email})["data"]["signUp"]["accessToken"]
    user = User.objects.get(email=email)
    receipt = f"local-test:{PACK}:race-{time.monotonic_ns()}"

    watcher = ws_client()
    assert watcher.init(token)["type"] == "connection_ack"
    watcher.subscribe("w", WALLET)
    assert watcher.next_for("w")["payload"]["data"]["walletUpdated"]["balance"] == 20

    barrier = threading.Barrier(RACERS + 1)
    results: list = [None] * (RACERS + 1)

    def app(index: int) -> None:
        barrier.wait(timeout=30)
        results[index] = http_graphql(asgi_server.url, VERIFY, {"receipt": receipt}, token)

    def store() -> None:
        barrier.wait(timeout=30)
        response = httpx.post(
            f"{asgi_server.url}/webhooks/local-test-store",
            json={"type": "DID_RENEW", "receipt": receipt, "period": 1, "id": "race-notification"},
            timeout=30,
        )
        results[RACERS] = response.status_code

    threads = [threading.Thread(target=app, args=(i,)) for i in range(RACERS)] + [
        threading.Thread(target=store)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    payloads = [result["data"]["verifyPurchase"] for result in results[:RACERS]]
    assert [p["__typename"] for p in payloads] == ["PurchasePayload"] * RACERS, payloads
    assert results[RACERS] == 200
    assert Wallet.objects.get(user=user).balance == 120
    assert Purchase.objects.filter(transaction_id=receipt).count() == 1
    assert CreditEntry.objects.filter(wallet__user=user, kind=EntryKind.GRANT).count() == 2  # welcome + pack
    assert StoreNotification.objects.filter(notification_id="race-notification").count() == 1
    # Every caller saw the pack's credits (none saw a half-applied state).
    assert {p["wallet"]["balance"] for p in payloads} == {120}
    # The app's wallet subscription got the new balance.
    deadline = time.monotonic() + 10
    balance = None
    while balance != 120 and time.monotonic() < deadline:
        balance = watcher.next_for("w")["payload"]["data"]["walletUpdated"]["balance"]
    assert balance == 120


@pytest.mark.django_db(transaction=True)
def test_racing_threads_in_the_services_grant_once():
    """The same race without the server in between: 8 threads applying the charge for the app and one
    receiving the notification, released together on their own PostgreSQL connections."""
    from django.db import connection

    from apps.purchases.models import PurchaseSource
    from apps.purchases.services import notification_receive, transaction_apply
    from apps.purchases.stores import local

    call_command("load_products", verbosity=0)
    user = User.objects.create_user(f"race-{time.monotonic_ns()}@example.com", "a-long-password-42")
    receipt = f"local-test:{PACK}:threads-{time.monotonic_ns()}"
    txn = local.verify(receipt, platform="IOS", product_type=local.ProductType.CONSUMABLE)
    notice = local.parse_notification(
        f'{{"type": "DID_RENEW", "receipt": "{receipt}", "id": "threads"}}'.encode(),
        product_type_of=lambda platform, product: local.ProductType.CONSUMABLE,
    )
    barrier = threading.Barrier(RACERS + 1)
    errors: list[BaseException] = []

    def run(call) -> None:
        try:
            connection.ensure_connection()
            barrier.wait(timeout=30)
            call()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    calls = [lambda: transaction_apply(txn, source=PurchaseSource.APP, caller=user)] * RACERS
    calls.append(lambda: notification_receive(notice))
    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert Wallet.objects.get(user=user).balance == 100
    assert CreditEntry.objects.filter(wallet__user=user, kind=EntryKind.GRANT).count() == 1
