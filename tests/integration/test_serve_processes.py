"""`manage.py serve --web-processes 2` in services mode: two uvicorn worker processes behind one port, one
Redis channel layer. Sockets land on both processes; an event published from a third process reaches the
sockets of each, and `/metrics` (answered by whichever process takes the scrape) counts every process's
open websockets."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from apps.accounts.models import User
from apps.credits.services import credits_grant
from tests.fixtures.api import PASSWORD, SIGN_UP
from tests.fixtures.live import LocalAddresses, WSClient, free_port, http_graphql

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
WALLET = "subscription { walletUpdated { balance } }"


class Serve(LocalAddresses):
    """`manage.py serve` on the test database and Redis, in its own process group."""

    def __init__(self, log_path: Path, *args: str) -> None:
        self.port = free_port()
        database_url = urlsplit(os.environ["DATABASE_URL"])._replace(
            path="/" + connection.settings_dict["NAME"]
        )
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(DATABASE_URL=database_url.geturl(), PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING")
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--host=127.0.0.1", f"--port={self.port}", *args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def web_processes(self) -> list[psutil.Process]:
        """The processes that listen on the port, less uvicorn's supervisor (serve itself)."""
        return [
            child
            for child in psutil.Process(self.process.pid).children(recursive=True)
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in _connections(child))
        ]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def two_processes(tmp_path):
    server = Serve(tmp_path / "serve.log", "--web-processes=2", "--workers=0")
    try:
        deadline = time.monotonic() + 60
        while len(server.web_processes()) < 2:
            assert server.process.poll() is None, server.log()
            assert time.monotonic() < deadline, "two web processes did not start:\n" + server.log()
            time.sleep(0.2)
        yield server
    finally:
        server.stop()
        connection.close()


def _connections(process: psutil.Process) -> list:
    try:
        return process.net_connections(kind="tcp")
    except psutil.NoSuchProcess:  # a short-lived child (multiprocessing's spawn helpers) already gone
        return []


def _serving_pid(web: list[psutil.Process], client: WSClient) -> int:
    """The server process holding the other end of this client's connection."""
    client_port = client.conn.socket.getsockname()[1]
    for process in web:
        if any(c.raddr and c.raddr.port == client_port for c in _connections(process)):
            return process.pid
    raise AssertionError(f"no server process holds the connection from port {client_port}")


def _open_websockets(server: Serve) -> int:
    scrape = httpx.get(f"{server.url}/metrics", timeout=10).text
    return next(
        sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
        if sample.name == "websocket_connections"
    )


def test_an_event_from_another_process_reaches_the_sockets_of_both_web_processes(two_processes):
    server = two_processes
    web = server.web_processes()
    email = f"u{uuid.uuid4().hex[:10]}@example.com"
    signed_up = http_graphql(server.url, SIGN_UP, {"email": email, "password": PASSWORD})["data"]["signUp"]
    assert signed_up["__typename"] == "AuthPayload", signed_up
    welcome = signed_up["user"]["credits"]

    # Sockets until each process holds one: the kernel hands each connection to one of them.
    sockets: dict[int, list[WSClient]] = {process.pid: [] for process in web}
    opened: list[WSClient] = []
    try:
        deadline = time.monotonic() + 60
        while not all(sockets.values()):
            assert time.monotonic() < deadline, {pid: len(held) for pid, held in sockets.items()}
            client = WSClient(server.ws_url)
            opened.append(client)
            assert client.init(signed_up["accessToken"])["type"] == "connection_ack"
            client.subscribe("wallet", WALLET)
            assert client.next_for("wallet", timeout=30)["payload"]["data"]["walletUpdated"] == {
                "balance": welcome
            }
            sockets[_serving_pid(web, client)].append(client)

        # One scrape, answered by one of the two, counts the sockets of both.
        assert _open_websockets(server) == len(opened)

        # This test's process commits a grant and publishes through the Redis channel layer.
        credits_grant(user=User.objects.get(email=email), amount=5, reason="promo")
        for pid, held in sockets.items():
            for client in held:
                update = client.next_for("wallet", timeout=20)
                assert update["payload"]["data"]["walletUpdated"] == {"balance": welcome + 5}, pid
    finally:
        for client in opened:
            with contextlib.suppress(Exception):
                client.close()
    assert "2 server processes" in server.log()
