"""The Dramatiq path on Redis: a service enqueues after commit, a worker runs the actor, the event reaches a
websocket subscriber. Redelivery of the same message changes nothing the second time."""

from __future__ import annotations

import time

import dramatiq
import pytest
from django.db import transaction
from dramatiq.brokers.redis import RedisBroker

from apps.accounts.models import Device, User
from apps.core.queues import QUEUE_DEFAULT
from apps.credits.models import CreditEntry, EntryKind, Wallet
from apps.credits.services import credits_hold
from apps.credits.tasks import credits_grant_task, credits_schedule_grant
from tests.fixtures.api import PASSWORD, SIGN_UP
from tests.fixtures.live import http_graphql

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

WALLET = "subscription { walletUpdated { balance held } }"


class Rollback(Exception):
    pass


def _waiting(queue_name: str) -> list[dramatiq.Message]:
    """The messages waiting in Redis on `queue_name` (and its delay queue), read straight from the keys."""
    broker = dramatiq.get_broker()
    client, namespace = broker.client, broker.namespace
    messages = []
    for name in (queue_name, f"{queue_name}.DQ"):
        for message_id in client.lrange(f"{namespace}:{name}", 0, -1):
            messages.append(dramatiq.Message.decode(client.hget(f"{namespace}:{name}.msgs", message_id)))
        assert client.hlen(f"{namespace}:{name}.msgs") == client.llen(f"{namespace}:{name}")
    return messages


@pytest.fixture
def broker():
    broker = dramatiq.get_broker()
    assert isinstance(broker, RedisBroker)
    broker.flush_all()
    yield broker
    broker.flush_all()


def _user() -> User:
    return User.objects.create_user(f"u{time.monotonic_ns()}@example.com", "a-long-test-password-42")


def test_grant_scheduled_in_a_rolled_back_transaction_enqueues_nothing(broker):
    user = _user()

    with pytest.raises(Rollback), transaction.atomic():
        credits_schedule_grant(user=user, amount=10, reason="promo", reference="promo:rolled-back")
        raise Rollback
    assert _waiting(QUEUE_DEFAULT) == []

    # The same call in a transaction that commits enqueues one message, and only at the commit.
    with transaction.atomic():
        credits_schedule_grant(user=user, amount=10, reason="promo", reference="promo:committed")
        assert _waiting(QUEUE_DEFAULT) == []
    (message,) = _waiting(QUEUE_DEFAULT)
    assert (message.queue_name, message.actor_name) == (QUEUE_DEFAULT, "credits_grant_task")
    assert message.kwargs == {
        "user_id": str(user.pk),
        "amount": 10,
        "reason": "promo",
        "reference": "promo:committed",
    }
    assert not Wallet.objects.filter(user=user).exists()  # nothing runs it here: no worker


def test_grant_reaches_a_websocket_subscriber_through_the_worker(
    asgi_server, ws_client, django_worker, broker, settings
):
    settings.WELCOME_CREDITS = 20
    email = f"path{time.monotonic_ns()}@example.com"
    signed_up = http_graphql(asgi_server.url, SIGN_UP, {"email": email, "password": PASSWORD})["data"][
        "signUp"
    ]
    user = User.objects.get(email=email)
    client = ws_client()
    assert client.init(signed_up["accessToken"])["type"] == "connection_ack"
    client.subscribe("w", WALLET)
    assert client.next_for("w")["payload"]["data"]["walletUpdated"] == {"balance": 20, "held": 0}

    with transaction.atomic():
        credits_schedule_grant(user=user, amount=35, reason="promo", reference=f"promo:{user.pk}")

    message = client.next_for("w", timeout=20)
    assert message["type"] == "next"
    assert message["payload"]["data"]["walletUpdated"] == {"balance": 55, "held": 0}
    assert Wallet.objects.get(user=user).balance == 55
    entry = CreditEntry.objects.get(reference=f"promo:{user.pk}")
    assert (entry.kind, entry.amount, entry.balance_after) == (EntryKind.GRANT, 35, 55)

    # A hold made elsewhere shows up on the same subscription, with what is held.
    device = Device.objects.create(user=user, token="phone", platform="IOS", app_version="1.0")
    credits_hold(user=user, amount=15, owner=device)
    assert client.next_for("w", timeout=20)["payload"]["data"]["walletUpdated"] == {"balance": 40, "held": 15}


def test_the_same_grant_message_delivered_twice_grants_once(django_worker, broker):
    user = _user()
    message = credits_grant_task.message(
        user_id=str(user.pk), amount=12, reason="promo", reference=f"promo:twice:{user.pk}"
    )
    broker.enqueue(message)
    broker.enqueue(message)  # a redelivery: the same message id, on the two worker threads at once
    broker.join(QUEUE_DEFAULT, timeout=20_000)

    assert Wallet.objects.get(user=user).balance == 12
    assert CreditEntry.objects.filter(wallet__user=user).count() == 1
    assert _waiting(QUEUE_DEFAULT) == []
    assert broker.client.hlen(f"{broker.namespace}:{QUEUE_DEFAULT}.XQ.msgs") == 0  # none dead-lettered


def test_a_grant_for_a_deleted_account_is_dropped(django_worker, broker):
    user = _user()
    with transaction.atomic():
        credits_schedule_grant(user=user, amount=5, reason="promo", reference="promo:gone")
        user.delete()
    broker.join(QUEUE_DEFAULT, timeout=20_000)
    assert Wallet.objects.count() == 0
    assert CreditEntry.objects.count() == 0
    assert broker.client.hlen(f"{broker.namespace}:{QUEUE_DEFAULT}.XQ.msgs") == 0
