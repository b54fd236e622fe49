"""CPU time of building the home screen's shared part from the database, in process, one build at a time:
what every uncached `homeScreen` (and its plain twin in trends_home.py) pays before serializing anything.

    .venv/bin/python bench/trends_build.py

Seeds a temporary embedded stack (SQLite) as trends_home.py does (the demo catalogue plus copies up to 200
live trends), then times, with the screen cache off: `build_shared_screen` (sections, items, trends,
categories, the layout), `home_screen_with_card_prices` (that plus the card prices: what `homeScreen` and
the twin call), and the live trends' query alone, as model instances and as plain rows (the part no
Python-side change can cut). Then whole requests through the ASGI application in process, with no client
and no server around it (each request's scope, body and sends made here, in a fresh process):
`POST /graphql { __typename }`, trends_home.py's `homeScreen` and its plain twin, in alternating rounds:
what each side costs beyond the shared build without the client's and uvicorn's share. Environment:
BENCH_TRENDS (default 200), BENCH_BUILDS (default 200), BENCH_ROUNDS (default 3).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import ROOT, describe_machine, server_env  # noqa: E402

TRENDS = int(os.environ.get("BENCH_TRENDS", "200"))
BUILDS = int(os.environ.get("BENCH_BUILDS", "200"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def cpu_ms(call, n: int = BUILDS) -> float:
    for _ in range(max(n // 10, 3)):
        call()
    started = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - started) / n * 1000


def measure() -> None:
    import django

    django.setup()
    from apps.generations.pricing import home_screen_with_card_prices
    from apps.trends.models import Trend, TrendStatus
    from apps.trends.screen import build_shared_screen
    from apps.trends.selectors import audience_parse

    audience = audience_parse(platform="IOS", app_version="2.0", locale="en")
    live = Trend.objects.filter(status=TrendStatus.LIVE)
    columns = [field.attname for field in Trend._meta.concrete_fields]
    screen, _ = build_shared_screen(audience)
    cards = sum(len(section.trends) for section in screen.sections)
    print(f"{live.count()} live trends, {len(screen.sections)} shared sections, {cards} cards")
    rows = [
        ("build_shared_screen", lambda: build_shared_screen(audience)),
        ("home_screen_with_card_prices", lambda: home_screen_with_card_prices(audience=audience, user=None)),
        ("live trends as models", lambda: list(live.all())),
        ("live trends as plain rows", lambda: list(live.values_list(*columns))),
    ]
    print(f"{'':<30} {'ms CPU':>8}")
    for name, call in rows:
        print(f"{name:<30} {cpu_ms(call):>8.2f}")


async def request(application, method: str, path: str, query: str = "", body: bytes = b"") -> None:
    """One HTTP request through `application`, as uvicorn would hand it over; fails unless it is a 200."""
    headers = [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    messages = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def receive():
        message = next(messages, None)
        if message is None:  # a handler that waits for the disconnect waits here until it is cancelled
            await asyncio.Event().wait()
        return message

    sent = []

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"{method} {path}: {sent}")


async def measure_requests() -> None:
    from trends_home import PLAIN, QUERY

    from backend.asgi import application

    path, query = PLAIN.split("?")
    cases = {
        "POST /graphql { __typename }": (
            "POST",
            "/graphql",
            "",
            json.dumps({"query": "{ __typename }"}).encode(),
        ),
        "POST /graphql homeScreen": ("POST", "/graphql", "", json.dumps({"query": QUERY}).encode()),
        "GET /bench/home (the twin)": ("GET", path, query, b""),
    }
    for method, url, query_string, body in cases.values():
        for _ in range(20):
            await request(application, method, url, query_string, body)
    print(f"\nwhole requests in process, uncached, {BUILDS} each per round (ms CPU per request)")
    print(f"{'':<30} " + " ".join(f"{f'round {n + 1}':>8}" for n in range(ROUNDS)))
    figures: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, (method, url, query_string, body) in cases.items():
            started = time.process_time()
            for _ in range(BUILDS):
                await request(application, method, url, query_string, body)
            figures[name].append((time.process_time() - started) / BUILDS * 1000)
    for name, values in figures.items():
        print(f"{name:<30} " + " ".join(f"{value:>8.2f}" for value in values))
    graphql, plain = figures["POST /graphql homeScreen"], figures["GET /bench/home (the twin)"]
    print(f"GraphQL / plain, CPU per request: {sum(graphql) / sum(plain):.2f}x")


def main() -> None:
    if sys.argv[1:] == ["measure"]:
        measure()
        return
    if sys.argv[1:] == ["requests"]:
        asyncio.run(measure_requests())
        return
    print(f"bench/trends_build.py: {describe_machine()}; {TRENDS} live trends; {BUILDS} builds per row")
    with tempfile.TemporaryDirectory(prefix="bench-trends-build-") as var_dir:
        env = server_env(
            Path(var_dir),
            DJANGO_SETTINGS_MODULE="bench.trends_settings",
            PYTHONPATH=str(ROOT),
            TRENDS_SCHEDULER_ENABLED="0",
            TRENDS_SCREEN_CACHE_SECONDS="0",
            BENCH_TRENDS=str(TRENDS),
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
        )
        seed = [sys.executable, str(Path(__file__).with_name("trends_home.py")), "seed"]
        subprocess.run(seed, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        # Each part in a process of its own: after thousands of builds, the same requests cost ~3 ms more
        # each (a heap grown by the builds, walked by the garbage collector).
        for part in ("measure", "requests"):
            subprocess.run([sys.executable, __file__, part], cwd=ROOT, env=env, check=True)


if __name__ == "__main__":
    main()
