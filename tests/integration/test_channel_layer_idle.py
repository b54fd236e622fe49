"""An idle subscription survives the Redis channel layer's receive poll.

channels-redis waits for messages with a 5 s BZPOPMIN; redis-py 8 reads with a default 5 s socket timeout,
so without a longer timeout in CHANNEL_LAYERS the read failed first and every websocket idle for 5 s was
dropped without a close frame (found by bench/ws.py).
"""

import time

import pytest

from apps.accounts.models import User
from apps.credits.services import credits_grant
from tests.fixtures.api import PASSWORD, SIGN_UP
from tests.fixtures.live import http_graphql

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

WALLET = "subscription { walletUpdated { balance held } }"


def test_an_idle_subscription_still_gets_events_after_the_channel_layer_poll(
    asgi_server, ws_client, settings
):
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    auth = http_graphql(asgi_server.url, SIGN_UP, {"email": "idle@example.com", "password": PASSWORD})
    client = ws_client()
    assert client.init(auth["data"]["signUp"]["accessToken"])["type"] == "connection_ack"
    client.subscribe("w", WALLET)
    first = client.next_for("w")["payload"]["data"]["walletUpdated"]
    assert first == {"balance": settings.WELCOME_CREDITS, "held": 0}

    time.sleep(6.5)  # longer than one 5 s BZPOPMIN with nothing to receive

    credits_grant(user=User.objects.get(email="idle@example.com"), amount=3, reason="test")
    event = client.next_for("w", timeout=10)
    assert event["type"] == "next"
    assert event["payload"]["data"]["walletUpdated"] == {"balance": settings.WELCOME_CREDITS + 3, "held": 0}
