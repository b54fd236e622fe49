"""Requests/s and latency of the `me` query over HTTP, against a plain Django JSON view of the same data.

    .venv/bin/python bench/http_me.py            # or: make bench

Starts the embedded stack (SQLite, in-process broker, in a temporary VAR_DIR) under uvicorn with
BENCH_ENDPOINTS=1, signs up one user, then drives 20 concurrent keep-alive connections at
    POST /graphql   {"query": "{ me { id email credits } }"}      Authorization: Bearer <token>
    GET  /bench/me  (backend/bench_views.py: same data, same auth, same two reads)
in alternating rounds, and prints requests/s, p50/p99 latency and the server's CPU time per request.

Environment: BENCH_SECONDS (per round and endpoint, default 8), BENCH_ROUNDS (default 2),
BENCH_CONCURRENCY (default 20), BENCH_PYSPY=<prefix> (py-spy samples of the server during each endpoint's
first round, in <prefix>.graphql.txt and <prefix>.plain.txt; summarize with bench/stacks.py), BENCH_CLIENT
(`lean`, the default: bench/_client.py, about 0.2 ms of CPU per request; `httpx`: about 1.6 ms). The client
runs on the same machine as the server: on a small machine the two compete for cores, so the server CPU per
request is the steadier figure.

Scaling out: BENCH_PROCESSES=1,2 measures a server of 1, then of 2 processes (uvicorn workers on one port,
as `manage.py serve --web-processes N` starts them) in one run and prints both rows and their ratio. Several
processes need the services stack (the embedded mode serves from one process), so with BENCH_PROCESSES every
row runs on PostgreSQL + Redis (BENCH_DATABASE_URL, BENCH_REDIS_URL: a scratch database, migrated, one user
added per row); the figures are then not comparable with the embedded stack's (SQLite, per-process cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _client import drive, sender  # noqa: E402
from _stack import (  # noqa: E402
    Server,
    describe_machine,
    machine_cpu_ticks,
    percentile,
    process_cpu_seconds,
    processes_from_env,
    server_env,
    sign_up,
)

SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "20"))
CLIENT = os.environ.get("BENCH_CLIENT", "lean")  # lean (bench/_client.py) | httpx
WARMUP_SECONDS = 2.0
ME_QUERY = "{ me { id email credits } }"


@dataclass
class Totals:
    name: str
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    machine_busy: int = 0  # clock ticks, all cores
    machine_total: int = 0

    @property
    def count(self) -> int:
        return len(self.latencies)


def _requests(url: str, token: str) -> list[tuple[str, tuple[str, str, dict[str, str], bytes]]]:
    auth = {"Authorization": f"Bearer {token}"}
    body = json.dumps({"query": ME_QUERY}).encode()
    json_auth = {"Content-Type": "application/json", **auth}
    return [
        ("GraphQL POST /graphql me", ("POST", f"{url}/graphql", json_auth, body)),
        ("Django GET /bench/me", ("GET", f"{url}/bench/me", auth, b"")),
    ]


@contextlib.contextmanager
def sampled(server: Server, name: str, round_: int):
    """BENCH_PYSPY=<prefix>: py-spy samples the server's threads during each endpoint's first round and
    writes collapsed stacks to <prefix>.<endpoint>.txt (py-spy from the venv; `pip install py-spy`)."""
    prefix = os.environ.get("BENCH_PYSPY")
    if not prefix or round_:
        yield
        return
    slug = "graphql" if name.startswith("GraphQL") else "plain"
    output = f"{prefix}.{slug}.txt"
    command = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(server.process.pid)]
    command += ["--duration", str(int(SECONDS)), "--rate", "200", "--format", "raw", "--nonblocking"]
    sampler = subprocess.Popen([*command, "--output", output], stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        sampler.wait(timeout=SECONDS + 30)
        print(f"  py-spy samples of {name}: {output}")


async def _run(server: Server, token: str) -> list[Totals]:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        shared = client if CLIENT == "httpx" else None
        endpoints = [
            (name, sender(*request, shared=shared)) for name, request in _requests(server.url, token)
        ]
        # Same answer from both, or the comparison means nothing.
        answers = []
        for _, factory in endpoints:
            send, close = factory()
            answers.append((await send()).json())
            close()
        if answers[0] != answers[1] or not answers[0]["data"]["me"]:
            raise RuntimeError(f"the two endpoints disagree: {answers}")
        print(f"both answer {answers[0]}")

        for _, send in endpoints:
            await drive(send, WARMUP_SECONDS, CONCURRENCY)
        if server.processes > 1:
            held = " / ".join(str(n) for n in server.connections_per_process().values())
            print(f"  keep-alive connections per server process: {held}")

        totals = [Totals(name) for name, _ in endpoints]
        for round_ in range(ROUNDS):
            for total, (name, send) in zip(totals, endpoints, strict=True):
                server_cpu, client_cpu = server.cpu_seconds(), process_cpu_seconds()
                busy, ticks = machine_cpu_ticks()
                with sampled(server, name, round_):
                    latencies, elapsed = await drive(send, SECONDS, CONCURRENCY)
                total.server_cpu += server.cpu_seconds() - server_cpu
                total.client_cpu += process_cpu_seconds() - client_cpu
                busy_after, ticks_after = machine_cpu_ticks()
                total.machine_busy += busy_after - busy
                total.machine_total += ticks_after - ticks
                total.latencies += latencies
                total.elapsed += elapsed
                print(f"  round {round_ + 1}: {name:<26} {len(latencies) / elapsed:8.0f} req/s")
        return totals


@dataclass
class Row:
    rps: float
    p50: float
    p99: float
    cpu: float  # server CPU ms per request
    busy: float  # share of the machine's cores busy meanwhile (everything on it, not only the benchmark)

    HEADER = f"{'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/req':>18} {'cores busy':>10}"

    def __str__(self) -> str:
        return f"{self.rps:>8.0f} {self.p50:>8.2f} {self.p99:>8.2f} {self.cpu:>18.3f} {self.busy:>10.0%}"


def measure(env: dict[str, str], processes: int) -> dict[str, Row]:
    print(f"  machine load average before: {os.getloadavg()[0]:.1f}")
    with Server(env, processes=processes) as server:
        token = sign_up(server.url, f"bench-{uuid.uuid4().hex[:8]}@example.com")["accessToken"]
        totals = asyncio.run(_run(server, token))

    print()
    print(f"{'endpoint':<26} {'requests':>9} {Row.HEADER}")
    rows = {}
    for total in totals:
        latencies = sorted(total.latencies)
        row = Row(
            rps=total.count / total.elapsed,
            p50=percentile(latencies, 50) * 1000,
            p99=percentile(latencies, 99) * 1000,
            cpu=total.server_cpu / total.count * 1000,
            busy=total.machine_busy / total.machine_total,
        )
        rows[total.name] = row
        print(f"{total.name:<26} {total.count:>9} {row}")
        print(f"{'':<26} (load generator CPU {total.client_cpu / total.count * 1000:.3f} ms/req)")
    graphql, plain = rows.values()
    print()
    print(
        f"GraphQL / plain Django: throughput {graphql.rps / plain.rps:.2f}x, "
        f"p50 {graphql.p50 / plain.p50:.2f}x, p99 {graphql.p99 / plain.p99:.2f}x, "
        f"server CPU per request {graphql.cpu / plain.cpu:.2f}x"
    )
    return rows


def main() -> None:
    scaling = "BENCH_PROCESSES" in os.environ
    counts = processes_from_env()
    stack = "embedded stack (SQLite), one server process"
    extra: dict[str, str] = {}
    if scaling:
        database_url = os.environ.get("BENCH_DATABASE_URL", "")
        redis_url = os.environ.get("BENCH_REDIS_URL", "")
        if not (database_url and redis_url):
            sys.exit(
                "BENCH_PROCESSES runs on the services stack: set BENCH_DATABASE_URL (a scratch PostgreSQL "
                "database) and BENCH_REDIS_URL (a scratch Redis db)"
            )
        extra = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
        stack = f"services stack (PostgreSQL + Redis), server processes: {', '.join(map(str, counts))}"
    print(
        f"bench/http_me.py: {describe_machine()}; {stack}; {CONCURRENCY} concurrent clients, "
        f"{ROUNDS} rounds x {SECONDS:.0f} s per endpoint"
    )
    results: dict[int, dict[str, Row]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-http-") as var_dir:
        env = server_env(Path(var_dir), BENCH_ENDPOINTS="1", **extra)
        for processes in counts:
            if scaling:
                print(f"\n== {processes} server process{'es' if processes > 1 else ''} ==")
            results[processes] = measure(env, processes)
    if len(results) > 1:
        print_scaling(results)


def print_scaling(results: dict[int, dict[str, Row]]) -> None:
    print("\nScaling out (services stack; the load generator shares the machine's cores):")
    print(f"{'processes':>9}  {'endpoint':<26} {Row.HEADER}")
    for processes, rows in results.items():
        for name, row in rows.items():
            print(f"{processes:>9}  {name:<26} {row}")
    first = min(results)
    for processes in sorted(results):
        if processes == first:
            continue
        for name, row in results[processes].items():
            base = results[first][name]
            print(
                f"{processes} / {first} processes, {name}: throughput {row.rps / base.rps:.2f}x, "
                f"p99 {row.p99 / base.p99:.2f}x, server CPU per request {row.cpu / base.cpu:.2f}x"
            )


if __name__ == "__main__":
    main()
