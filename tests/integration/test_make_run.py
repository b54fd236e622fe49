"""`make run` on the embedded default: no services, one command, GraphiQL and a signed-in websocket."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.live import WSClient, free_port
from tests.fixtures.static import needs_graphiql

ROOT = Path(__file__).resolve().parents[2]
DEMO = json.loads((ROOT / "fixtures" / "demo_account.json").read_text())

SIGN_IN = """mutation ($email: String!, $password: String!) {
  signIn(input: {email: $email, password: $password}) {
    __typename ... on AuthPayload { accessToken user { email credits } } ... on Error { code message } } }"""


def _start(env: dict, var: Path):
    """Starts `make run` with `env`; yields (base URL, log file, env) once it serves, stops it afterwards."""
    port = free_port()
    env.update(VAR_DIR=str(var), PORT=str(port), HOST="127.0.0.1", PYTHONUNBUFFERED="1")
    log = var / "make-run.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise AssertionError("make run exited:\n" + log.read_text())
            time.sleep(0.3)
        else:
            raise AssertionError("make run did not serve within 120 s")
        yield base, log, env
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def make_run(tmp_path_factory):
    """`make run` in a clean environment: no DATABASE_URL/REDIS_URL, its own var/ folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
    }
    yield from _start(env, tmp_path_factory.mktemp("var"))


def _sign_in_demo(base: str) -> dict:
    response = httpx.post(
        f"{base}/graphql",
        json={"query": SIGN_IN, "variables": {"email": DEMO["email"], "password": DEMO["password"]}},
        timeout=10,
    )
    return response.json()["data"]["signIn"]


@needs_graphiql
def test_make_run_serves_graphiql_and_the_demo_account(make_run):
    base, _, _ = make_run
    page = httpx.get(f"{base}/graphql", headers={"Accept": "text/html"}, timeout=10)
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()
    # The page's scripts and styles and admin's stylesheet come from this server (collectstatic ran).
    login = httpx.get(f"{base}/admin/login/", timeout=10).text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text + login)
    assert any(url.startswith("/static/admin/css/base.") for url in assets), assets
    assert sum(url.startswith("/static/graphiql/") for url in assets) == 7, assets
    for url in assets:
        assert httpx.get(f"{base}{url}", timeout=10).status_code == 200, url

    ready = httpx.get(f"{base}/readyz", timeout=10).json()
    assert ready == {"status": "ok", "checks": {"database": "ok", "broker": "ok", "storage": "ok"}}

    signed_in = httpx.post(
        f"{base}/graphql",
        json={"query": SIGN_IN, "variables": {"email": DEMO["email"], "password": DEMO["password"]}},
        timeout=10,
    ).json()["data"]["signIn"]
    assert signed_in["__typename"] == "AuthPayload"
    assert signed_in["user"] == {"email": DEMO["email"], "credits": DEMO["credits"]}

    client = WSClient(f"ws://{base.removeprefix('http://')}/graphql")
    try:
        assert client.init(signed_in["accessToken"])["type"] == "connection_ack"
        client.subscribe("me", "{ me { email } }")
        assert client.next_for("me")["payload"]["data"]["me"]["email"] == DEMO["email"]
        client.subscribe("wallet", "subscription { walletUpdated { balance } }")
        assert client.next_for("wallet")["payload"]["data"]["walletUpdated"]["balance"] == DEMO["credits"]
    finally:
        client.close()


BUY = """mutation ($receipt: String!) { verifyPurchase(input: {platform: IOS, signedTransaction: $receipt}) {
  __typename ... on PurchasePayload { wallet { balance } } ... on Error { code message } } }"""
PRODUCTS = "{ products(platform: IOS) { storeProductId kind credits } }"


def test_make_run_sells_credit_packs_through_the_local_test_store(make_run):
    base, _, _ = make_run
    products = httpx.post(f"{base}/graphql", json={"query": PRODUCTS}, timeout=10).json()["data"]["products"]
    pack = next(p for p in products if p["kind"] == "CREDIT_PACK" and p["credits"] == 100)
    token = _sign_in_demo(base)["accessToken"]
    before = _sign_in_demo(base)["user"]["credits"]
    receipt = f"local-test:{pack['storeProductId']}:graphiql-{time.monotonic_ns()}"
    for _ in range(2):  # the same purchase twice grants once
        bought = httpx.post(
            f"{base}/graphql",
            json={"query": BUY, "variables": {"receipt": receipt}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()["data"]["verifyPurchase"]
        assert bought == {"__typename": "PurchasePayload", "wallet": {"balance": before + 100}}


def test_make_run_prints_the_graphiql_url_and_demo_sign_in(make_run):
    base, log, _ = make_run
    text = log.read_text()
    assert f"GraphiQL:  {base}/graphql" in text
    assert DEMO["email"] in text and DEMO["password"] in text


@pytest.fixture(scope="module")
def make_run_services(tmp_path_factory):
    """`make run` with DATABASE_URL and REDIS_URL: the server plus separate backend worker processes."""
    import psycopg

    base_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    if not (base_url and redis_url):
        pytest.skip("needs PostgreSQL and Redis")
    name = f"makerun_{os.getpid()}"
    admin_url = base_url.replace("postgres://", "postgresql://", 1).rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(DATABASE_URL=base_url.rsplit("/", 1)[0] + f"/{name}", REDIS_URL=redis_url)
    try:
        yield from _start(env, tmp_path_factory.mktemp("var"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.services
def test_make_run_in_services_mode_runs_separate_workers(make_run_services):
    base, log, env = make_run_services
    assert "Mode:      services" in log.read_text()
    assert httpx.get(f"{base}/readyz", timeout=10).json()["status"] == "ok"
    signed_in = _sign_in_demo(base)
    client = WSClient(f"ws://{base.removeprefix('http://')}/graphql")
    try:
        client.init(signed_in["accessToken"])
        client.subscribe("wallet", "subscription { walletUpdated { balance } }")
        assert client.next_for("wallet")["payload"]["data"]["walletUpdated"]["balance"] == DEMO["credits"]
        # Another process enqueues a grant on Redis; a backend worker process applies it; the server
        # hears of it through the Redis channel layer and the subscriber gets the new balance.
        script = (
            "from apps.accounts.models import User; from apps.credits.tasks import credits_schedule_grant;"
            "from django.db import transaction\n"
            "with transaction.atomic():\n"
            f"    credits_schedule_grant(user=User.objects.get(email='{DEMO['email']}'), amount=7,"
            " reason='promo', reference='promo:make-run-test')"
        )
        subprocess.run(
            [str(ROOT / ".venv" / "bin" / "python"), "manage.py", "shell", "-c", script],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=60,
        )
        update = client.next_for("wallet", timeout=30)
        assert update["payload"]["data"]["walletUpdated"]["balance"] == DEMO["credits"] + 7
    finally:
        client.close()
