"""Requests/s and latency of `homeScreen` with 200 live trends, cached and uncached, beside a plain Django
JSON view of the same data (bench/trends_urls.py) in the same run.

    .venv/bin/python bench/trends_home.py

Seeds a temporary embedded stack (SQLite) with the demo catalogue plus generated trends up to 200 live,
then starts the server twice: with the shared-screen cache on (the default), and with it off
(TRENDS_SCREEN_CACHE_SECONDS=0: every request rebuilds the screen from the database). Each time, 20
concurrent keep-alive clients alternate between
    POST /graphql        homeScreen(platform: IOS, appVersion: "2.0", locale: "en") { ...the fields below }
    GET  /bench/home     the same sections and fields from the same selector, as plain JSON
and the script prints requests/s, p50/p99 latency and the server's CPU time per request.

Environment: BENCH_SECONDS (per round and endpoint, default 6), BENCH_ROUNDS (default 2),
BENCH_CONCURRENCY (default 20), BENCH_TRENDS (live trends, default 200), BENCH_CLIENT (`lean`, the default:
bench/_client.py, about 0.2 ms of CPU per request; `httpx`: about 1.6 ms, which the server's two cores
share at 500 cached screens a second).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _client import drive, sender  # noqa: E402
from _stack import ROOT, Server, describe_machine, percentile, server_env  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "6"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "20"))
TRENDS = int(os.environ.get("BENCH_TRENDS", "200"))
CLIENT = os.environ.get("BENCH_CLIENT", "lean")  # lean (bench/_client.py) | httpx
WARMUP_SECONDS = 1.5

QUERY = """query { homeScreen(platform: IOS, appVersion: "2.0", locale: "en") { id sections {
  __typename
  ... on HomeSection { id title }
  ... on HeroSection { trends { ...card } }
  ... on TrendCarouselSection { trends { ...card } }
  ... on TrendGridSection { trends { ...card } }
  ... on CategoryChipsSection { categories { slug title } }
} } }
fragment card on Trend {
  id slug title priceCredits coverImage { url width height } category { slug title }
}"""
PLAIN = "/bench/home?platform=IOS&appVersion=2.0&locale=en"
JSON = {"Content-Type": "application/json"}


def seed(n_trends: int) -> None:
    """Runs inside the bench environment: the demo catalogue, then copies of its trends up to n live."""
    import uuid

    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from apps.trends.models import Trend, TrendStatus
    from apps.trends.rotation import trends_rotate

    call_command("load_trends", "--no-previews", verbosity=0)
    templates = list(Trend.objects.filter(status=TrendStatus.LIVE))
    existing = len(templates)
    now = timezone.now()
    copies = []
    for i in range(max(n_trends - existing, 0)):
        source = templates[i % existing]
        copy = Trend.objects.get(pk=source.pk)
        copy.id = uuid.uuid4()
        copy._state.adding = True
        copy.slug, copy.title = f"{source.slug}-{i}", f"{source.title} {i}"
        copy.published_at = now - timezone.timedelta(hours=(i * 7) % 200)
        copy.trending_score = (i * 37 % 1000) / 10000
        copies.append(copy)
    Trend.objects.bulk_create(copies)
    trends_rotate()
    print(f"seeded {Trend.objects.filter(status=TrendStatus.LIVE).count()} live trends")


async def _measure(server: Server, label: str) -> list[tuple]:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        body = json.dumps({"query": QUERY}).encode()
        shared = client if CLIENT == "httpx" else None
        graphql_url, plain_url = f"{server.url}/graphql", f"{server.url}{PLAIN}"
        endpoints = [
            (f"GraphQL homeScreen, {label}", sender("POST", graphql_url, JSON, body, shared=shared)),
            (f"Django /bench/home, {label}", sender("GET", plain_url, shared=shared)),
        ]
        for locale in ("es", "en"):  # the same data in another language too (translated categories)
            query = QUERY.replace('locale: "en"', f'locale: "{locale}"')
            graphql = (await client.post(f"{server.url}/graphql", json={"query": query})).json()
            plain = (await client.get(f"{server.url}{PLAIN.replace('locale=en', f'locale={locale}')}")).json()
            if graphql != plain:
                raise RuntimeError(f"the GraphQL and plain answers differ (locale {locale})")
        sections = graphql["data"]["homeScreen"]["sections"]
        shown = sum(len(s.get("trends", [])) for s in sections)
        print(f"  {label}: {len(sections)} sections, {shown} trend cards, both endpoints agree")
        for _, factory in endpoints:
            await drive(factory, WARMUP_SECONDS, CONCURRENCY)
        totals = {name: [[], 0.0, 0.0] for name, _ in endpoints}
        for _ in range(ROUNDS):
            for name, factory in endpoints:
                cpu = server.cpu_seconds()
                latencies, elapsed = await drive(factory, SECONDS, CONCURRENCY)
                totals[name][0] += latencies
                totals[name][1] += elapsed
                totals[name][2] += server.cpu_seconds() - cpu
        rows = []
        for name, (latencies, elapsed, cpu) in totals.items():
            latencies.sort()
            rows.append(
                (
                    name,
                    len(latencies),
                    len(latencies) / elapsed,
                    percentile(latencies, 50) * 1000,
                    percentile(latencies, 99) * 1000,
                    cpu / len(latencies) * 1000,
                )
            )
        return rows


def main() -> None:
    if sys.argv[1:] == ["seed"]:
        seed(TRENDS)
        return
    print(
        f"bench/trends_home.py: {describe_machine()}; {TRENDS} live trends; "
        f"{CONCURRENCY} concurrent clients ({CLIENT}), {ROUNDS} x {SECONDS:.0f} s per endpoint"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-trends-") as var_dir:
        base = server_env(
            Path(var_dir),
            DJANGO_SETTINGS_MODULE="bench.trends_settings",
            PYTHONPATH=str(ROOT),  # so that `bench.trends_settings` imports
            TRENDS_SCHEDULER_ENABLED="0",
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=base, check=True
        )
        subprocess.run([sys.executable, __file__, "seed"], cwd=ROOT, env=base, check=True)
        for label, extra in (("cached", {}), ("uncached", {"TRENDS_SCREEN_CACHE_SECONDS": "0"})):
            with Server({**base, **extra}) as server:
                rows += asyncio.run(_measure(server, label))

    print()
    print(
        f"{'endpoint':<34} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/req':>18}"
    )
    for name, count, rps, p50, p99, cpu in rows:
        print(f"{name:<34} {count:>9} {rps:>8.0f} {p50:>8.2f} {p99:>8.2f} {cpu:>18.3f}")
    # Rows come in pairs per label, GraphQL first: the ratios of the table, as http_me.py prints them
    # (GraphQL is ahead with throughput over 1.0x and server CPU per request under 1.0x).
    for graphql, plain in zip(rows[::2], rows[1::2], strict=True):
        label = graphql[0].rsplit(", ", 1)[1]
        print(
            f"GraphQL / plain Django, {label}: throughput {graphql[2] / plain[2]:.2f}x, "
            f"server CPU per request {graphql[5] / plain[5]:.2f}x"
        )


if __name__ == "__main__":
    main()
