"""Shared test fixtures: a GraphQL client over HTTP, users, a live ASGI server, websocket clients.

`make test` sets DATABASE_URL and REDIS_URL to the machine's PostgreSQL and Redis, so the suite runs
against real services; tests marked `services` need them and fail under CI when they are missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

SERVICES = bool(os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"))
UNDER_CI = os.environ.get("CI") == "true"

PASSWORD = "a-long-test-password-42"


def pytest_collection_modifyitems(config, items) -> None:
    if SERVICES:
        return
    if UNDER_CI:
        raise pytest.UsageError("CI must run with DATABASE_URL and REDIS_URL (PostgreSQL and Redis)")
    skip = pytest.mark.skip(reason="needs PostgreSQL and Redis (run `make test` with them up)")
    for item in items:
        if "services" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _tmp_media(settings, tmp_path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


class GraphQLClient:
    def __init__(self, client) -> None:
        self.client = client

    def raw(self, query: str, variables: dict | None = None, token: str | None = None, **extra: Any):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        body = json.dumps({"query": query, "variables": variables or {}})
        return self.client.post("/graphql", body, content_type="application/json", **headers, **extra)

    def __call__(
        self, query: str, variables: dict | None = None, token: str | None = None, **extra: Any
    ) -> dict:
        response = self.raw(query, variables, token, **extra)
        assert response.status_code == 200, response.content
        return response.json()


@pytest.fixture
def gql(client) -> GraphQLClient:
    return GraphQLClient(client)


SIGN_UP = """
mutation ($email: String!, $password: String!) {
  signUp(input: {email: $email, password: $password}) {
    __typename
    ... on AuthPayload { accessToken refreshToken user { id email credits } }
    ... on Error { code message }
  }
}
"""


@pytest.fixture
def sign_up(gql):
    """Signs up a new account through the API and returns the AuthPayload."""
    counter = iter(range(1_000_000))

    def _sign_up(email: str | None = None, password: str = PASSWORD) -> dict:
        email = email or f"user{next(counter)}-{time.monotonic_ns()}@example.com"
        payload = gql(SIGN_UP, {"email": email, "password": password})["data"]["signUp"]
        assert payload["__typename"] == "AuthPayload", payload
        return payload

    return _sign_up


# --- A live ASGI server (uvicorn in a thread) for websocket and HTTP-level tests -------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(self) -> None:
        import uvicorn

        self.port = _free_port()
        config = uvicorn.Config(
            "backend.asgi:application",
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            log_level="warning",
            ws_ping_interval=None,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def start(self) -> None:
        # A channel layer binds to the event loop that first receives on it; each live server runs its own
        # loop, so each gets fresh layer objects (one server process has one loop in production).
        from channels.layers import channel_layers

        channel_layers.backends.clear()
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def asgi_server(transactional_db) -> Iterator[LiveServer]:
    server = LiveServer()
    server.start()
    yield server
    server.stop()


def http_graphql(url: str, query: str, variables: dict | None = None, token: str | None = None) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(
        f"{url}/graphql", json={"query": query, "variables": variables or {}}, headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


class WSClient:
    """A real websocket client speaking graphql-transport-ws (the `websockets` library)."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self._connection = connect(url, subprotocols=["graphql-transport-ws"], open_timeout=10)
        self.conn = self._connection.__enter__()

    def send(self, message: dict) -> None:
        self.conn.send(json.dumps(message))

    def recv(self, timeout: float = 10) -> dict:
        return json.loads(self.conn.recv(timeout=timeout))

    def init(self, token: str | None) -> dict:
        payload = {"authorization": f"Bearer {token}"} if token else {}
        self.send({"type": "connection_init", "payload": payload})
        return self.recv()

    def subscribe(self, op_id: str, query: str, variables: dict | None = None) -> None:
        self.send(
            {"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}}
        )

    def next_for(self, op_id: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(timeout=max(deadline - time.monotonic(), 0.01))
            if message.get("id") == op_id:
                return message

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


@pytest.fixture
def ws_client(asgi_server) -> Iterator[Any]:
    opened: list[WSClient] = []

    def _open() -> WSClient:
        client = WSClient(asgi_server.ws_url)
        opened.append(client)
        return client

    yield _open
    for client in opened:
        with contextlib.suppress(Exception):
            client.close()


@pytest.fixture
def django_worker(transactional_db) -> Iterator[Any]:
    """Dramatiq worker threads for the Django queues, on the configured broker (Redis in `make test`)."""
    import dramatiq

    from apps.core.queues import DJANGO_QUEUES

    broker = dramatiq.get_broker()
    broker.flush_all()
    worker = dramatiq.Worker(broker, queues=set(DJANGO_QUEUES), worker_threads=2, worker_timeout=100)
    worker.start()
    yield worker
    worker.stop()
    broker.flush_all()
