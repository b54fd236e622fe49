"""Requests/s and latency of the `me` query over HTTP, against a plain Django JSON view of the same data.

    .venv/bin/python bench/http_me.py            # or: make bench

Starts the embedded stack (SQLite, in-process broker, in a temporary VAR_DIR) under uvicorn with
BENCH_ENDPOINTS=1, signs up one user, then drives 20 concurrent keep-alive clients (httpx, async) at
    POST /graphql   {"query": "{ me { id email credits } }"}      Authorization: Bearer <token>
    GET  /bench/me  (backend/bench_views.py: same data, same auth, same two reads)
in alternating rounds, and prints requests/s, p50/p99 latency and the server's CPU time per request.

Environment: BENCH_SECONDS (per round and endpoint, default 8), BENCH_ROUNDS (default 2),
BENCH_CONCURRENCY (default 20), BENCH_PYSPY=<prefix> (py-spy samples of the server during each endpoint's
first round, in <prefix>.graphql.txt and <prefix>.plain.txt; summarize with bench/stacks.py). The client runs on the same machine as the server: on a small machine the
two compete for cores, so the server CPU per request is the steadier figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import Server, describe_machine, percentile, process_cpu_seconds, server_env, sign_up  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "20"))
WARMUP_SECONDS = 2.0
ME_QUERY = "{ me { id email credits } }"


@dataclass
class Totals:
    name: str
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies)


def _graphql(client: httpx.AsyncClient, url: str, token: str):
    headers = {"Authorization": f"Bearer {token}"}
    body = {"query": ME_QUERY}
    return lambda: client.post(f"{url}/graphql", json=body, headers=headers)


def _plain(client: httpx.AsyncClient, url: str, token: str):
    headers = {"Authorization": f"Bearer {token}"}
    return lambda: client.get(f"{url}/bench/me", headers=headers)


async def _drive(send, seconds: float) -> tuple[list[float], float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = await send()
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return latencies, time.perf_counter() - started


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
        endpoints = [
            ("GraphQL POST /graphql me", _graphql(client, server.url, token)),
            ("Django GET /bench/me", _plain(client, server.url, token)),
        ]
        # Same answer from both, or the comparison means nothing.
        answers = [(await send()).json() for _, send in endpoints]
        if answers[0] != answers[1] or not answers[0]["data"]["me"]:
            raise RuntimeError(f"the two endpoints disagree: {answers}")
        print(f"both answer {answers[0]}")

        for _, send in endpoints:
            await _drive(send, WARMUP_SECONDS)

        totals = [Totals(name) for name, _ in endpoints]
        for round_ in range(ROUNDS):
            for total, (name, send) in zip(totals, endpoints, strict=True):
                server_cpu, client_cpu = server.cpu_seconds(), process_cpu_seconds()
                with sampled(server, name, round_):
                    latencies, elapsed = await _drive(send, SECONDS)
                total.server_cpu += server.cpu_seconds() - server_cpu
                total.client_cpu += process_cpu_seconds() - client_cpu
                total.latencies += latencies
                total.elapsed += elapsed
                print(f"  round {round_ + 1}: {name:<26} {len(latencies) / elapsed:8.0f} req/s")
        return totals


def main() -> None:
    print(
        f"bench/http_me.py: {describe_machine()}; {CONCURRENCY} concurrent clients, "
        f"{ROUNDS} rounds x {SECONDS:.0f} s per endpoint"
    )
    with tempfile.TemporaryDirectory(prefix="bench-http-") as var_dir:
        env = server_env(Path(var_dir), BENCH_ENDPOINTS="1")
        with Server(env) as server:
            token = sign_up(server.url, f"bench-{uuid.uuid4().hex[:8]}@example.com")["accessToken"]
            totals = asyncio.run(_run(server, token))

    print()
    print(
        f"{'endpoint':<26} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/req':>18}"
    )
    rows = {}
    for total in totals:
        latencies = sorted(total.latencies)
        rps = total.count / total.elapsed
        p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
        cpu = total.server_cpu / total.count * 1000
        rows[total.name] = (rps, p50, p99, cpu)
        print(f"{total.name:<26} {total.count:>9} {rps:>8.0f} {p50:>8.2f} {p99:>8.2f} {cpu:>18.3f}")
        print(f"{'':<26} (load generator CPU {total.client_cpu / total.count * 1000:.3f} ms/req)")
    (g_rps, g_p50, g_p99, g_cpu), (p_rps, p_p50, p_p99, p_cpu) = rows.values()
    print()
    print(
        f"GraphQL / plain Django: throughput {g_rps / p_rps:.2f}x, p50 {g_p50 / p_p50:.2f}x, "
        f"p99 {g_p99 / p_p99:.2f}x, server CPU per request {g_cpu / p_cpu:.2f}x"
    )


if __name__ == "__main__":
    main()
