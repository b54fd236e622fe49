"""Generations in services mode: createGeneration throughput, and the latency of progress events from the
GPU worker's emit to the websocket client.

The stack: PostgreSQL and Redis (BENCH_DATABASE_URL, BENCH_REDIS_URL: scratch ones, the database is
created if missing and migrated), one uvicorn process, one backend worker process (`python -m
backend.worker`, 4 threads) and the GPU lanes (gpu_worker.actors, tiny-wan on the CPU) in this process on
their own RedisBroker, with a sink that notes when each event is emitted (CLOCK_MONOTONIC, which the
websocket client in this process shares).

1. Latency: `BENCH_GEN_JOBS` free-prompt jobs one after another, each watched over the websocket. Each
   event the client receives is matched to the worker event it reflects (stage and progress); printed:
   emit -> client p50/p99/max over all of them, and over the terminal (SUCCEEDED) ones; submit ->
   SUCCEEDED p50/p99.
2. Throughput: the GPU lanes stopped, `BENCH_GEN_CLIENTS` concurrent clients (one user each) call
   createGeneration for `BENCH_GEN_SECONDS`; printed: creates/s, latency p50/p99, server CPU per create.
   The jobs left queued are flushed afterwards. `BENCH_PROCESSES=1,2`: a row for a server of 1, then of
   2 processes (uvicorn workers on one port, as `manage.py serve --web-processes N`), one after another;
   `BENCH_CLIENT=lean`: the clients on bench/_client.py (asyncio, about a tenth of httpx's CPU per
   request, which the server's cores share on a small machine) instead of httpx threads;
   `BENCH_PYSPY=<file>`: py-spy samples of the (one-process) server's thread that holds the GIL during
   the throughput phase (its Python CPU, waits left out), as collapsed stacks (summarize with
   bench/stacks.py). `BENCH_GEN_JOBS=0` skips phase 1.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_generations \\
    BENCH_REDIS_URL=redis://127.0.0.1:6379/13 .venv/bin/python bench/generations_services.py
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._client import Connection, drive, encode_request, json_post  # noqa: E402
from bench._stack import (  # noqa: E402
    ROOT,
    Server,
    describe_machine,
    machine_cpu_ticks,
    percentile,
    process_cpu_seconds,
    processes_from_env,
    server_env,
    sign_up,
)

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_generations")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
JOBS = int(os.environ.get("BENCH_GEN_JOBS", "20"))
CLIENTS = int(os.environ.get("BENCH_GEN_CLIENTS", "16"))
SECONDS = float(os.environ.get("BENCH_GEN_SECONDS", "10"))
CLIENT = os.environ.get("BENCH_CLIENT", "httpx")  # the throughput phase's: httpx threads, or lean

CREATE = """
mutation ($input: GenerationInput!) {
  createGeneration(input: $input) {
    __typename ... on GenerationPayload { generation { id } } ... on Error { code message }
  }
}
"""
WATCH = (
    "subscription ($id: ID!) { generationUpdated(id: $id) { sequence generation { status stage progress } } }"
)


def bench_env(var_dir: Path) -> dict[str, str]:
    """The server's environment for the generations benchmarks: the scratch services, credits and active
    generations without limits, every job on tiny-wan, no trend scheduler."""
    return server_env(
        var_dir,
        DATABASE_URL=DATABASE_URL,
        REDIS_URL=REDIS_URL,
        WELCOME_CREDITS="1000000",
        GENERATIONS_MAX_ACTIVE_PER_USER="1000000",
        GENERATIONS_ROUTE_OVERRIDE="tiny-wan",
        TRENDS_SCHEDULER_ENABLED="0",
    )


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.replace("postgres://", "postgresql://", 1).rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def create(client: httpx.Client, url: str, token: str, prompt: str) -> str:
    variables = {"input": {"prompt": prompt, "quality": "DRAFT", "idempotencyKey": str(uuid.uuid4())}}
    response = client.post(
        f"{url}/graphql",
        json={"query": CREATE, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    result = response.json()["data"]["createGeneration"]
    if result["__typename"] != "GenerationPayload":
        raise RuntimeError(f"createGeneration: {result}")
    return result["generation"]["id"]


def lean_sender(url: str, tokens: list[str]):
    """bench/_client.py's `drive` senders: each its own user and keep-alive connection, a new key each."""
    remaining = list(tokens)
    host, port, _ = encode_request("POST", f"{url}/graphql")

    def sender():
        token, connection = remaining.pop(), Connection(host, port)

        async def send():
            variables = {
                "input": {
                    "prompt": "a throughput clip",
                    "quality": "DRAFT",
                    "idempotencyKey": str(uuid.uuid4()),
                }
            }
            payload = {"query": CREATE, "variables": variables}
            _, _, request = json_post(f"{url}/graphql", payload, {"Authorization": f"Bearer {token}"})
            response = await connection.send(request)
            result = response.json()["data"]["createGeneration"]
            if result["__typename"] != "GenerationPayload":
                raise RuntimeError(f"createGeneration: {result}")
            return response

        return send, connection.close

    return sender


class RecordingLanes:
    """The GPU lanes in this process; `emitted[(job_id, stage, progress)]` = when the worker sent it."""

    def __init__(self, media_root: Path) -> None:
        from dramatiq.brokers.redis import RedisBroker

        from gpu_worker.actors import broker_sink, build_worker, redis_cancel_checker
        from gpu_worker.runner import Runner
        from gpu_worker.storage import LocalStorage

        self.broker = RedisBroker(url=REDIS_URL)
        self.broker.emit_after("process_boot")
        send = broker_sink(self.broker)
        self.emitted: dict[tuple, float] = {}

        def sink(event) -> None:
            stage = "SUCCEEDED" if event.kind == "completed" else event.stage
            self.emitted.setdefault((event.job_id, stage, round(event.progress, 4)), time.monotonic())
            send(event)

        runner = Runner(
            storage=LocalStorage(media_root),
            sink=sink,
            cancel_checker=redis_cancel_checker(self.broker.client),
            model_root=media_root.parent / "models",
            device="cpu",
            progress_interval=0.05,
        )
        self.worker = build_worker(self.broker, runner)
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop(timeout=30_000)
        self.broker.close()


def job_id(global_id: str) -> str:
    return base64.b64decode(global_id).decode().split(":", 1)[1]


def latency_phase(server: Server, token: str, lanes: RecordingLanes) -> None:
    conn = connect(server.ws_url, subprotocols=["graphql-transport-ws"], open_timeout=10)
    conn.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
    assert json.loads(conn.recv(timeout=10))["type"] == "connection_ack"
    deliveries, terminal, totals = [], [], []
    with httpx.Client() as client:
        for i in range(JOBS + 1):  # the first one loads the model: not counted
            started = time.monotonic()
            generation_id = create(client, server.url, token, f"a person smiling, clip {i}")
            pk = job_id(generation_id)
            payload = {"query": WATCH, "variables": {"id": generation_id}}
            conn.send(json.dumps({"id": str(i), "type": "subscribe", "payload": payload}))
            first = True
            while True:
                message = json.loads(conn.recv(timeout=120))
                if message.get("id") != str(i):
                    continue
                if message["type"] == "complete":
                    break
                received = time.monotonic()
                generation = message["payload"]["data"]["generationUpdated"]["generation"]
                if first:  # the snapshot, not an event
                    first = False
                    continue
                stage = "SUCCEEDED" if generation["status"] == "SUCCEEDED" else generation["stage"]
                emitted = lanes.emitted.get((pk, stage, round(generation["progress"], 4)))
                if emitted is not None and i > 0:
                    deliveries.append(received - emitted)
                    if stage == "SUCCEEDED":
                        terminal.append(received - emitted)
                        totals.append(received - started)
    conn.close()
    deliveries.sort()
    terminal.sort()
    totals.sort()
    print(
        f"emit -> websocket over {len(deliveries)} events: "
        f"p50 {percentile(deliveries, 50) * 1000:.1f} ms, "
        f"p99 {percentile(deliveries, 99) * 1000:.1f} ms, max {deliveries[-1] * 1000:.1f} ms; "
        f"completed events p50 {percentile(terminal, 50) * 1000:.1f} ms, "
        f"p99 {percentile(terminal, 99) * 1000:.1f} ms"
    )
    print(
        f"submit -> SUCCEEDED over {len(totals)} jobs: p50 {percentile(totals, 50):.2f} s, "
        f"p99 {percentile(totals, 99):.2f} s"
    )


def throughput_phase(server: Server, tokens: list[str]) -> None:
    if not tokens:  # the same users in every round (sign-ups are throttled per network)
        tokens += [
            sign_up(server.url, f"bench-gen-{uuid.uuid4().hex[:8]}@example.com")["accessToken"]
            for _ in range(CLIENTS)
        ]
    latencies: list[float] = []
    lock = threading.Lock()

    def client_loop(token: str) -> None:
        stop = time.monotonic() + SECONDS
        with httpx.Client() as client:
            while time.monotonic() < stop:
                started = time.monotonic()
                create(client, server.url, token, "a throughput clip")
                with lock:
                    latencies.append(time.monotonic() - started)

    def run_clients() -> None:
        if CLIENT == "lean":
            latencies.extend(asyncio.run(drive(lean_sender(server.url, tokens), SECONDS, CLIENTS))[0])
            return
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            list(pool.map(client_loop, tokens))

    sampler = None
    if os.environ.get("BENCH_PYSPY") and server.processes == 1:
        command = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(server.process.pid)]
        command += ["--duration", str(int(SECONDS)), "--rate", "200", "--format", "raw", "--nonblocking"]
        command += ["--gil", "--output", os.environ["BENCH_PYSPY"]]
        sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    cpu_before, client_before = server.cpu_seconds(), process_cpu_seconds()
    machine_before = machine_cpu_ticks()
    started = time.monotonic()
    run_clients()
    wall = time.monotonic() - started
    cpu = server.cpu_seconds() - cpu_before
    client = process_cpu_seconds() - client_before
    busy, total = (after - before for after, before in zip(machine_cpu_ticks(), machine_before, strict=True))
    if sampler is not None:
        sampler.wait(timeout=SECONDS + 30)
        print(f"py-spy samples of the server: {os.environ['BENCH_PYSPY']}")
    latencies.sort()
    print(
        f"createGeneration, {server.processes} server process(es), {CLIENT} client, "
        f"{CLIENTS} clients x {SECONDS:.0f} s: {len(latencies)} created, "
        f"{len(latencies) / wall:.1f}/s, p50 {percentile(latencies, 50) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 99) * 1000:.0f} ms, "
        f"server CPU {cpu / len(latencies) * 1000:.1f} ms/create; "
        f"the clients' CPU {client / len(latencies) * 1000:.1f} ms/create, "
        f"the machine {busy / total:.0%} busy"
    )


def main() -> int:
    print(f"bench/generations_services.py on {describe_machine()}")
    ensure_database(DATABASE_URL)
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    with tempfile.TemporaryDirectory(prefix="bench-gen-") as var:
        env = bench_env(Path(var))
        os.environ.update(REDIS_URL=REDIS_URL)
        worker, tokens = None, []
        try:
            for round_, processes in enumerate(processes_from_env()):
                with Server(env, processes=processes) as server:  # the first one migrates
                    if worker is None:
                        worker = subprocess.Popen(
                            [sys.executable, "-m", "backend.worker"],
                            cwd=ROOT,
                            env={**env, "DRAMATIQ_WORKER_THREADS": "4"},
                        )
                    if round_ == 0 and JOBS > 0:
                        lanes = RecordingLanes(Path(var) / "media")
                        token = sign_up(server.url, f"bench-gen-{uuid.uuid4().hex[:8]}@example.com")
                        latency_phase(server, token["accessToken"], lanes)
                        lanes.stop()
                    throughput_phase(server, tokens)
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(timeout=30)
    redis.Redis.from_url(REDIS_URL).flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
