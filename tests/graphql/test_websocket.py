"""The websocket endpoint, through a live uvicorn server and a real `graphql-transport-ws` client."""

import time

import pytest
from websockets.exceptions import ConnectionClosed

from tests.fixtures.live import WSClient, http_graphql

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

SIGN_UP = """mutation { signUp(input: {email: "ws@example.com", password: "a-long-test-password-42"}) {
  ... on AuthPayload { accessToken } } }"""
WALLET = "subscription { walletUpdated { balance held } }"


def _token(asgi_server) -> str:
    return http_graphql(asgi_server.url, SIGN_UP)["data"]["signUp"]["accessToken"]


def _close_code(client: WSClient) -> int:
    with pytest.raises(ConnectionClosed) as info:
        client.recv(timeout=15)
    return info.value.rcvd.code


def test_signed_in_client_gets_answers_over_the_socket(asgi_server, ws_client):
    token = _token(asgi_server)
    client = ws_client()
    assert client.init(token)["type"] == "connection_ack"
    client.subscribe("1", "{ me { email credits } }")
    message = client.next_for("1")
    assert message["type"] == "next"
    assert message["payload"]["data"]["me"]["email"] == "ws@example.com"
    assert client.next_for("1")["type"] == "complete"


def test_subscription_yields_current_state_first(asgi_server, ws_client, settings):
    token = _token(asgi_server)
    client = ws_client()
    client.init(token)
    client.subscribe("w", WALLET)
    first = client.next_for("w")
    assert first["payload"]["data"]["walletUpdated"] == {"balance": settings.WELCOME_CREDITS, "held": 0}


def test_missing_token_closes_with_4403(asgi_server, ws_client):
    client = ws_client()
    client.send({"type": "connection_init", "payload": {}})
    assert _close_code(client) == 4403


def test_bad_token_closes_with_4403(asgi_server, ws_client):
    client = ws_client()
    client.send({"type": "connection_init", "payload": {"authorization": "Bearer not-a-token"}})
    assert _close_code(client) == 4403


def test_no_connection_init_closes_with_4408(asgi_server, ws_client, settings):
    # The configured wait is 10 s; the test lowers it through the setting the consumer reads at connect.
    settings.GRAPHQL_WS_INIT_TIMEOUT_SECONDS = 1
    client = ws_client()
    started = time.monotonic()
    assert _close_code(client) == 4408
    assert time.monotonic() - started < 10


def test_subscribe_before_ack_closes_with_4401(asgi_server, ws_client):
    client = ws_client()
    client.subscribe("1", "{ me { email } }")
    assert _close_code(client) == 4401


def test_ping_is_answered_with_pong(asgi_server, ws_client):
    client = ws_client()
    client.init(_token(asgi_server))
    client.send({"type": "ping"})
    assert client.recv()["type"] == "pong"


def test_legacy_graphql_ws_protocol_is_refused_with_4406(asgi_server):
    from websockets.sync.client import connect

    with connect(asgi_server.ws_url, subprotocols=["graphql-ws"], open_timeout=5) as conn:
        with pytest.raises(ConnectionClosed) as info:
            conn.recv(timeout=5)
    assert info.value.rcvd.code == 4406


def test_a_stale_wallet_event_is_dropped_and_newer_ones_delivered(asgi_server, ws_client, settings):
    from apps.accounts.models import User
    from apps.core import events
    from apps.credits.services import credits_grant

    token = _token(asgi_server)
    user = User.objects.get(email="ws@example.com")
    client = ws_client()
    client.init(token)
    client.subscribe("w", WALLET)
    assert client.next_for("w")["payload"]["data"]["walletUpdated"]["balance"] == settings.WELCOME_CREDITS
    # An event older than the snapshot (as a reordered delivery would be) must not reach the client.
    events.publish(events.user_group(user.pk), {"kind": "wallet", "balance": 999, "held": 0, "version": 1})
    credits_grant(user=user, amount=5, reason="test")
    update = client.next_for("w")["payload"]["data"]["walletUpdated"]
    assert update == {"balance": settings.WELCOME_CREDITS + 5, "held": 0}


def test_sockets_of_one_user_share_one_read_per_event_and_others_read_their_own(
    asgi_server, ws_client, settings, monkeypatch
):
    """graphql_schema/live.py: followers of one object for one user share the read after an event; another
    user's subscription reads through the selector with that user, never someone else's result."""
    from apps.accounts.models import User
    from apps.credits import selectors
    from apps.credits.services import credits_grant
    from graphql_schema.credits import subscriptions

    reads = []
    wallet_state = selectors.wallet_state

    def counting(*, user):
        reads.append(user.email)
        return wallet_state(user=user)

    monkeypatch.setattr(subscriptions, "wallet_state", counting)
    token = _token(asgi_server)
    other = http_graphql(
        asgi_server.url,
        SIGN_UP.replace("ws@example.com", "other@example.com"),
    )["data"]["signUp"]["accessToken"]
    user = User.objects.get(email="ws@example.com")
    mine = [ws_client() for _ in range(3)]
    for client in mine:
        client.init(token)
        client.subscribe("w", WALLET)
        assert client.next_for("w")["payload"]["data"]["walletUpdated"]["balance"] == settings.WELCOME_CREDITS
    theirs = ws_client()
    theirs.init(other)
    theirs.subscribe("w", WALLET)
    assert theirs.next_for("w")["payload"]["data"]["walletUpdated"]["balance"] == settings.WELCOME_CREDITS
    # Each subscription reads alone at first (access check, then the state after joining its group).
    first_reads = reads.count("ws@example.com")
    assert first_reads == 3 * reads.count("other@example.com")

    credits_grant(user=user, amount=5, reason="test")
    for client in mine:
        update = client.next_for("w")["payload"]["data"]["walletUpdated"]
        assert update == {"balance": settings.WELCOME_CREDITS + 5, "held": 0}
    assert reads.count("ws@example.com") == first_reads + 1  # one read for the three sockets
    assert reads.count("other@example.com") == first_reads // 3  # the other user read nothing more


def test_events_still_arrive_after_another_socket_closed(asgi_server, ws_client, settings):
    """Sockets come and go: one closing must not stop the channel layer delivering to the others."""
    from apps.accounts.models import User
    from apps.credits.services import credits_grant

    token = _token(asgi_server)
    gone = ws_client()
    gone.init(token)
    gone.subscribe("w", WALLET)
    gone.next_for("w")
    gone.close()
    time.sleep(0.5)
    client = ws_client()
    client.init(token)
    client.subscribe("w", WALLET)
    assert client.next_for("w")["payload"]["data"]["walletUpdated"]["balance"] == settings.WELCOME_CREDITS
    credits_grant(user=User.objects.get(email="ws@example.com"), amount=2, reason="test")
    update = client.next_for("w", timeout=10)["payload"]["data"]["walletUpdated"]
    assert update == {"balance": settings.WELCOME_CREDITS + 2, "held": 0}


def test_sockets_of_one_user_share_each_events_execution_and_another_users_socket_gets_nothing(
    asgi_server, ws_client, settings, monkeypatch
):
    """graphql_schema/live.py: the sockets of one user running the same document execute it once per event;
    a different document executes on its own; another user's socket never receives the event."""
    from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

    from apps.accounts.models import User
    from apps.credits.services import credits_grant

    executions = []
    execute_operation = StrawberryGraphQLCoreExecutionContext.execute_operation

    def counting(self, serially=None):
        if getattr(self, "_event", False):
            executions.append(self.operation.loc.source.body)
        return execute_operation(self, serially)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "execute_operation", counting)
    token = _token(asgi_server)
    other = http_graphql(asgi_server.url, SIGN_UP.replace("ws@example.com", "other@example.com"))["data"][
        "signUp"
    ]["accessToken"]
    balance_only = "subscription { walletUpdated { balance } }"
    mine = [ws_client() for _ in range(4)]
    for client, document in zip(mine, [WALLET, WALLET, WALLET, balance_only], strict=True):
        client.init(token)
        client.subscribe("w", document)
        client.next_for("w")
    theirs = ws_client()
    theirs.init(other)
    theirs.subscribe("w", WALLET)
    theirs.next_for("w")
    assert len(executions) == 5  # each socket's first state is its own read, executed alone
    executions.clear()

    credits_grant(user=User.objects.get(email="ws@example.com"), amount=5, reason="test")
    balance = settings.WELCOME_CREDITS + 5
    for client in mine[:3]:
        assert client.next_for("w")["payload"]["data"]["walletUpdated"] == {"balance": balance, "held": 0}
    assert mine[3].next_for("w")["payload"]["data"]["walletUpdated"] == {"balance": balance}
    assert sorted(executions) == sorted([WALLET, balance_only])  # once per document, not per socket
    with pytest.raises(TimeoutError):
        theirs.next_for("w", timeout=1)

    credits_grant(user=User.objects.get(email="other@example.com"), amount=2, reason="test")
    assert theirs.next_for("w")["payload"]["data"]["walletUpdated"]["balance"] == settings.WELCOME_CREDITS + 2


def _subscribed(ws_client, token: str, document: str = WALLET):
    client = ws_client()
    client.init(token)
    client.subscribe("w", document)
    client.next_for("w")
    return client


def test_each_events_payload_is_encoded_once_per_document_and_framed_per_socket(
    asgi_server, ws_client, settings, monkeypatch
):
    """graphql_schema/live.py: the group's fan-out encodes an event's `next` payload once per document and
    splices each subscription's own id into the frame."""
    from apps.accounts.models import User
    from apps.credits.services import credits_grant
    from graphql_schema import live

    encoded = []
    encode = live._encode_payload

    def counting(payload):
        encoded.append(payload)
        return encode(payload)

    monkeypatch.setattr(live, "_encode_payload", counting)
    token = _token(asgi_server)
    balance_only = "subscription { walletUpdated { balance } }"
    mine = [_subscribed(ws_client, token) for _ in range(3)]
    other_id = ws_client()
    other_id.init(token)
    other_id.subscribe("x", balance_only)
    other_id.next_for("x")

    credits_grant(user=User.objects.get(email="ws@example.com"), amount=5, reason="test")
    balance = settings.WELCOME_CREDITS + 5
    for client in mine:
        message = client.next_for("w")
        assert message == {
            "id": "w",
            "type": "next",
            "payload": {"data": {"walletUpdated": {"balance": balance, "held": 0}}},
        }
    assert other_id.next_for("x") == {
        "id": "x",
        "type": "next",
        "payload": {"data": {"walletUpdated": {"balance": balance}}},
    }
    assert sorted(encoded, key=str) == sorted(
        [
            {"data": {"walletUpdated": {"balance": balance, "held": 0}}},
            {"data": {"walletUpdated": {"balance": balance}}},
        ],
        key=str,
    )


def test_a_socket_receives_the_states_in_order(asgi_server, ws_client, settings):
    """Events in quick succession reach each socket in the order of their changes (a state may be skipped
    for a newer one, never sent after it), and the last state always arrives."""
    from apps.accounts.models import User
    from apps.credits.services import credits_grant

    token = _token(asgi_server)
    clients = [_subscribed(ws_client, token) for _ in range(2)]
    user = User.objects.get(email="ws@example.com")
    for _ in range(8):
        credits_grant(user=user, amount=1, reason="test")
    final = settings.WELCOME_CREDITS + 8
    for client in clients:
        seen = []
        while not seen or seen[-1] < final:
            seen.append(client.next_for("w")["payload"]["data"]["walletUpdated"]["balance"])
        assert seen == sorted(set(seen)), seen
        assert seen[-1] == final


def test_a_socket_that_does_not_drain_delays_no_other(asgi_server, ws_client, settings, monkeypatch):
    """A socket whose frame write never completes (a client that stopped reading) keeps its own frames
    waiting; the group's other sockets get every event."""
    import asyncio

    from apps.accounts.models import User
    from apps.credits.services import credits_grant
    from graphql_schema.ws import GraphQLSocket

    stuck: list = []
    send_frame = GraphQLSocket.send_frame

    async def never_for_the_slow_one(self, text):
        if self.scope["client"][1] == slow_port:
            stuck.append(text)
            await asyncio.Event().wait()
        await send_frame(self, text)

    monkeypatch.setattr(GraphQLSocket, "send_frame", never_for_the_slow_one)
    token = _token(asgi_server)
    slow = _subscribed(ws_client, token)
    slow_port = slow.conn.local_address[1]
    others = [_subscribed(ws_client, token) for _ in range(2)]
    user = User.objects.get(email="ws@example.com")
    for amount in (1, 2, 3):
        credits_grant(user=user, amount=amount, reason="test")
        balance = settings.WELCOME_CREDITS + sum(range(1, amount + 1))
        for client in others:
            assert client.next_for("w")["payload"]["data"]["walletUpdated"]["balance"] == balance
    assert len(stuck) == 1
    with pytest.raises(TimeoutError):
        slow.next_for("w", timeout=1)
