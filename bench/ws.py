"""Websocket figures: connection set-up latency, and fan-out of one group to 1,000 subscribers.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/<scratch db> \\
    BENCH_REDIS_URL=redis://127.0.0.1:6379/<scratch db> .venv/bin/python bench/ws.py     # or: make bench

Runs the services mode, as production delivers across processes: one uvicorn process (or several:
BENCH_PROCESSES, below) with the Redis channel layer and PostgreSQL (the scratch database is migrated; one
user is added per run).

1. Set-up: 200 connections one after another, each timed from TCP connect to the websocket upgrade, to
   `connection_ack` after `connection_init` (the bearer token is checked against the database), and to the
   first result of `subscription { walletUpdated { balance held } }` (the current balance, read from the
   database).
2. Fan-out: 1,000 sockets of one user, each subscribed to `walletUpdated`, all members of the user's group.
   A separate publisher process (Django, same database and Redis) calls `credits_grant(amount=1)`, which
   commits and publishes one wallet event; every socket should get it. Each event's balance tells it apart,
   so the latency of each delivery is measured from the start of the `credits_grant` call in the publisher
   to its arrival at the client (both on CLOCK_MONOTONIC). Two phases: a paced one (BENCH_WS_RATE events/s,
   default 1, for BENCH_WS_SECONDS, default 10) and a burst (BENCH_WS_BURST events back to back, default
   20). Printed: deliveries per second, latency p50/p99, deliveries missing 5 s after the last arrival, the
   sockets that got the phase's last state (a follower that falls behind skips to the latest state), and
   the server's CPU time per delivery.

BENCH_WS_SOCKETS (default 1000) and BENCH_WS_SETUP (default 200) change the counts. The client, the server
and the publisher share the machine's cores. The server runs with `manage.py serve`'s websocket settings
(websockets' Sans-I/O protocol, no per-message deflate); BENCH_UVICORN_WS=websockets|wsproto and
BENCH_WS_DEFLATE=1 (deflate offered by the clients and accepted) compare others.

Scaling out: BENCH_PROCESSES=1,2 runs all of it against a server of 1, then of 2 processes (uvicorn workers
on one port, as `manage.py serve --web-processes N` starts them) and prints both rows and their ratio. The
kernel hands each of the 1,000 connections to one process (printed: sockets per process); the publisher is
a process of its own, so with 2 every event crosses Redis to both server processes, and the deliveries
missing are counted per server process.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import (  # noqa: E402
    ROOT,
    Server,
    describe_machine,
    percentile,
    processes_from_env,
    server_env,
    sign_up,
)

SETUP_CONNECTIONS = int(os.environ.get("BENCH_WS_SETUP", "200"))
SOCKETS = int(os.environ.get("BENCH_WS_SOCKETS", "1000"))
RATE = float(os.environ.get("BENCH_WS_RATE", "1"))
PACED_SECONDS = float(os.environ.get("BENCH_WS_SECONDS", "10"))
BURST = int(os.environ.get("BENCH_WS_BURST", "20"))
# BENCH_WS_DEFLATE=1: the server accepts per-message deflate and the clients offer it (as OkHttp does).
COMPRESSION = "deflate" if os.environ.get("BENCH_WS_DEFLATE") == "1" else None
OPEN_CONCURRENCY = 50
PROTOCOL = "graphql-transport-ws"
WALLET = "subscription { walletUpdated { balance held } }"
BALANCE = re.compile(rb'"balance":(\d+)')


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    return f"p50 {percentile(ordered, 50) * 1000:7.2f} ms   p99 {percentile(ordered, 99) * 1000:7.2f} ms"


# --- Client side -----------------------------------------------------------------------------------------


async def _open(url: str, token: str):
    """A subscribed socket: (socket, seconds to open, to ack, to the first result, first balance)."""
    from websockets.asyncio.client import connect

    started = time.perf_counter()
    ws = await connect(url, subprotocols=[PROTOCOL], open_timeout=30, max_queue=None, compression=COMPRESSION)
    opened = time.perf_counter()
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
    ack = json.loads(await ws.recv())
    if ack["type"] != "connection_ack":
        raise RuntimeError(f"no ack: {ack}")
    acked = time.perf_counter()
    await ws.send(json.dumps({"id": "w", "type": "subscribe", "payload": {"query": WALLET}}))
    first = json.loads(await ws.recv())
    if first["type"] != "next":
        raise RuntimeError(f"no first result: {first}")
    done = time.perf_counter()
    balance = first["payload"]["data"]["walletUpdated"]["balance"]
    return ws, opened - started, acked - opened, done - acked, balance


async def setup_latency(url: str, token: str) -> list[float]:
    opens, acks, firsts, totals = [], [], [], []
    for _ in range(SETUP_CONNECTIONS):
        started = time.perf_counter()
        ws, opened, acked, first, _ = await _open(url, token)
        totals.append(time.perf_counter() - started)
        opens.append(opened)
        acks.append(acked)
        firsts.append(first)
        await ws.close()
    print(f"\n1. Set-up of {SETUP_CONNECTIONS} connections, one after another")
    print(f"   TCP + websocket upgrade          {_ms(opens)}")
    print(f"   connection_init -> ack           {_ms(acks)}")
    print(f"   subscribe -> first result        {_ms(firsts)}")
    print(f"   total, connect -> first result   {_ms(totals)}")
    return totals


class Fanout:
    def __init__(self) -> None:
        self.received: list[tuple[int, float, int]] = []  # (balance, monotonic arrival, server pid)
        self.sockets: list = []
        self.readers: list[asyncio.Task] = []
        self.closed: list[str] = []  # sockets that ended while subscribed, and why
        self.other: list = []  # messages other than wallet results (errors, completes)
        self.pid_of: dict[int, int] = {}  # id(socket): the server process holding it
        self.per_process: collections.Counter[int] = collections.Counter()  # sockets per server process

    async def open_all(self, server: Server, token: str) -> int:
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def one():
            async with gate:
                return await _open(server.ws_url, token)

        started = time.perf_counter()
        opened = await asyncio.gather(*(one() for _ in range(SOCKETS)))
        elapsed = time.perf_counter() - started
        self.sockets = [ws for ws, *_ in opened]
        balances = {balance for *_, balance in opened}
        print(f"\n2. Fan-out: {SOCKETS} sockets of one user subscribed to walletUpdated in {elapsed:.1f} s")
        pid_by_port = server.pid_by_client_port()
        self.pid_of = {id(ws): pid_by_port.get(ws.local_address[1], 0) for ws in self.sockets}
        self.per_process = collections.Counter(self.pid_of.values())
        if server.processes > 1:
            spread = " / ".join(str(self.per_process[pid]) for pid in server.web_pids)
            print(f"   sockets per server process: {spread}")
        self.readers = [asyncio.create_task(self._read(ws, self.pid_of[id(ws)])) for ws in self.sockets]
        return max(balances)

    async def _read(self, ws, pid: int) -> None:
        record = self.received.append
        try:
            async for message in ws:
                arrived = time.monotonic()
                match = BALANCE.search(message if isinstance(message, bytes) else message.encode())
                if match:
                    record((int(match.group(1)), arrived, pid))
                else:
                    self.other.append(message[:300])
        except Exception as exc:  # noqa: BLE001 - a closed socket ends its reader
            self.closed.append(repr(exc)[:200])
            return
        self.closed.append(f"closed {ws.close_code} {ws.close_reason}")

    async def close(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        for reader in self.readers:
            reader.cancel()


async def _publish(user_id: str, events: int, rate: float) -> dict[int, float]:
    """Runs the publisher process; returns {balance after the grant: monotonic time the call started}."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "--publish",
        user_id,
        str(events),
        str(rate),
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the publisher failed with {process.returncode}")
    published = {}
    for line in out.decode().splitlines():
        if line.startswith("["):
            balance, started = json.loads(line)
            published[balance] = started
    return published


@dataclass
class Phase:
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    missing: int
    without_last: int  # sockets that never got the phase's last state
    cpu_us: float  # server CPU per delivery


async def fanout_phase(
    fanout: Fanout, server: Server, user_id: str, name: str, events: int, rate: float
) -> Phase:
    already = len(fanout.received)
    cpu_before = server.cpu_seconds()
    published = await _publish(user_id, events, rate)
    expected = len(published) * len(fanout.sockets)

    def counted() -> list[tuple[int, float, int]]:
        # Only this phase's events: the publisher's warm-up grant reaches every socket too.
        return [(b, t, pid) for b, t, pid in fanout.received[already:] if b in published]

    # Wait for every delivery, or until nothing has arrived for 5 s.
    deadline = time.monotonic() + 120
    last_change, seen = time.monotonic(), len(fanout.received)
    while len(counted()) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        if len(fanout.received) != seen:
            last_change, seen = time.monotonic(), len(fanout.received)
        elif time.monotonic() - last_change > 5:
            break
    deliveries = counted()
    server_cpu = server.cpu_seconds() - cpu_before
    latencies = sorted(t - published[b] for b, t, _ in deliveries)
    first_publish = min(published.values())
    span = max(t for _, t, _ in deliveries) - first_publish
    rate_label = "back to back" if rate <= 0 else f"{rate:g}/s"
    print(f"   {name}: {len(published)} events ({rate_label}) x {len(fanout.sockets)} sockets")
    print(
        f"      delivered {len(deliveries)} of {expected} ({expected - len(deliveries)} missing) in "
        f"{span:.2f} s = {len(deliveries) / span:,.0f} deliveries/s"
    )
    # A follower reads the wallet's state for each message, so one that falls behind sends the latest
    # state and skips the ones between (coalescing): what must reach every socket is the last one.
    last = max(published)
    current = collections.Counter(pid for b, _, pid in deliveries if b == last)
    if server.processes > 1:
        reached = collections.Counter(pid for _, _, pid in deliveries)
        missing = [len(published) * fanout.per_process[pid] - reached[pid] for pid in server.web_pids]
        print(f"      missing per server process: {' / '.join(map(str, missing))}")
    spread = " / ".join(f"{current[pid]} of {fanout.per_process[pid]}" for pid in server.web_pids)
    print(f"      sockets that got the last state, per server process: {spread}")
    print(
        f"      latency from credits_grant() to the client: {_ms(latencies)}, "
        f"max {max(latencies) * 1000:.0f} ms"
    )
    print(f"      server CPU {server_cpu:.2f} s = {server_cpu / len(deliveries) * 1e6:.0f} us per delivery")
    per_event = collections.Counter(b for b, _, _ in deliveries)
    short = {b: per_event.get(b, 0) for b in sorted(published) if per_event.get(b, 0) < len(fanout.sockets)}
    if short:
        print(f"      events not delivered to every socket (balance: sockets reached): {short}")
    if fanout.closed or fanout.other:
        print(f"      sockets closed so far: {len(fanout.closed)} {sorted(set(fanout.closed))[:3]}")
        print(f"      other messages so far: {len(fanout.other)} {fanout.other[:2]}")
    return Phase(
        deliveries_per_s=len(deliveries) / span,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        missing=expected - len(deliveries),
        without_last=len(fanout.sockets) - sum(current.values()),
        cpu_us=server_cpu / len(deliveries) * 1e6,
    )


@dataclass
class Result:
    setup: list[float]  # seconds, connect -> first result
    paced: Phase
    burst: Phase


async def run_client(server: Server, token: str, user_id: str) -> Result:
    setup = await setup_latency(server.ws_url, token)
    fanout = Fanout()
    await fanout.open_all(server, token)
    try:
        paced = await fanout_phase(fanout, server, user_id, "paced", int(RATE * PACED_SECONDS), RATE)
        burst = await fanout_phase(fanout, server, user_id, "burst", BURST, 0)
    finally:
        await fanout.close()
    return Result(setup=setup, paced=paced, burst=burst)


# --- Publisher process -----------------------------------------------------------------------------------


def publish(user_id: str, events: int, rate: float) -> None:
    import django

    django.setup()
    from apps.accounts.models import User
    from apps.credits.services import credits_grant

    user = User.objects.get(pk=user_id)
    credits_grant(user=user, amount=1, reason="bench-warmup")  # connects to the database and Redis
    time.sleep(0.5)
    interval = 1 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    for _ in range(events):
        if interval:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
        started = time.monotonic()
        entry = credits_grant(user=user, amount=1, reason="bench")
        print(json.dumps([entry.balance_after, started]), flush=True)


# --- Main ------------------------------------------------------------------------------------------------


def main() -> None:
    database_url = os.environ.get("BENCH_DATABASE_URL", "")
    redis_url = os.environ.get("BENCH_REDIS_URL", "")
    if not (database_url and redis_url):
        sys.exit(
            "set BENCH_DATABASE_URL (a scratch PostgreSQL database) and BENCH_REDIS_URL (a scratch Redis db)"
        )
    counts = processes_from_env()
    print(
        f"bench/ws.py: {describe_machine()}; services mode (PostgreSQL + Redis channel layer), "
        f"server processes: {', '.join(map(str, counts))}"
    )
    results: dict[int, Result] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as var_dir:
        env = server_env(Path(var_dir), DATABASE_URL=database_url, REDIS_URL=redis_url)
        os.environ.update(env)  # the publisher process shares the database and channel layer
        for processes in counts:
            if len(counts) > 1:
                print(f"\n== {processes} server process{'es' if processes > 1 else ''} ==")
            with Server(env, processes=processes) as server:
                auth = sign_up(server.url, f"bench-ws-{uuid.uuid4().hex[:8]}@example.com")
                user_id = _user_pk(auth["user"]["id"])
                results[processes] = asyncio.run(run_client(server, auth["accessToken"], user_id))
    if len(results) > 1:
        print_scaling(results)


def print_scaling(results: dict[int, Result]) -> None:
    print(f"\nScaling out ({SOCKETS} sockets; the client and the publisher share the machine's cores):")
    print(
        f"{'processes':>9}  {'set-up p50/p99 ms':>17}  "
        f"{'phase':<6} {'deliveries/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'missing':>7} "
        f"{'no last state':>13} {'CPU us/delivery':>15}"
    )
    for processes, result in results.items():
        setup = sorted(result.setup)
        setup_ms = f"{percentile(setup, 50) * 1000:.1f} / {percentile(setup, 99) * 1000:.1f}"
        for name, phase in (("paced", result.paced), ("burst", result.burst)):
            print(
                f"{processes:>9}  {setup_ms:>17}  {name:<6} {phase.deliveries_per_s:>12,.0f} "
                f"{phase.p50_ms:>8.1f} {phase.p99_ms:>8.1f} {phase.missing:>7} {phase.without_last:>13} "
                f"{phase.cpu_us:>15.0f}"
            )
    first = min(results)
    for processes in sorted(results):
        if processes == first:
            continue
        for name in ("paced", "burst"):
            phase, base = getattr(results[processes], name), getattr(results[first], name)
            rate = phase.deliveries_per_s / base.deliveries_per_s
            print(
                f"{processes} / {first} processes, {name}: deliveries/s {rate:.2f}x, "
                f"p99 {phase.p99_ms / base.p99_ms:.2f}x, "
                f"server CPU per delivery {phase.cpu_us / base.cpu_us:.2f}x"
            )


def _user_pk(global_id: str) -> str:
    import base64

    kind, _, pk = base64.b64decode(global_id).decode().partition(":")
    assert kind == "User", global_id
    return pk


if __name__ == "__main__":
    if sys.argv[1:2] == ["--publish"]:
        publish(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        main()
