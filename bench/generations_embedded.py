"""Submit to SUCCEEDED in the embedded mode: one server process with SQLite, the in-process broker, the
Django worker threads and the GPU lanes (tiny-wan on the CPU), as `make run` runs it.

One user (credits and the active-job limit raised for the run) submits `BENCH_GEN_JOBS` free-prompt
generations one after another (9:16, 5 s: 48x80, 41 frames, 4 steps), each watched over the websocket
from createGeneration's answer to the SUCCEEDED event. Printed: p50/p99/max of submit -> SUCCEEDED, of
submit -> first RUNNING event, and the server's CPU time per job. Then a burst of the same number
submitted at once (queue wait included): wall time for all of them and jobs/s.

    .venv/bin/python bench/generations_embedded.py          # about 2 minutes on 2 cores
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import Server, describe_machine, percentile, server_env, sign_up  # noqa: E402

JOBS = int(os.environ.get("BENCH_GEN_JOBS", "50"))

CREATE = """
mutation ($input: GenerationInput!) {
  createGeneration(input: $input) {
    __typename ... on GenerationPayload { generation { id } } ... on Error { code message }
  }
}
"""
WATCH = "subscription ($id: ID!) { generationUpdated(id: $id) { sequence generation { status progress } } }"


def create(url: str, token: str, prompt: str) -> str:
    variables = {"input": {"prompt": prompt, "quality": "DRAFT", "idempotencyKey": str(uuid.uuid4())}}
    response = httpx.post(
        f"{url}/graphql",
        json={"query": CREATE, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    result = response.json()["data"]["createGeneration"]
    if result["__typename"] != "GenerationPayload":
        raise RuntimeError(f"createGeneration: {result}")
    return result["generation"]["id"]


class Socket:
    def __init__(self, ws_url: str, token: str) -> None:
        self.conn = connect(ws_url, subprotocols=["graphql-transport-ws"], open_timeout=10)
        self.conn.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        )
        assert json.loads(self.conn.recv(timeout=10))["type"] == "connection_ack"

    def watch(self, op_id: str, generation_id: str) -> None:
        payload = {"query": WATCH, "variables": {"id": generation_id}}
        self.conn.send(json.dumps({"id": op_id, "type": "subscribe", "payload": payload}))

    def messages(self, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            yield json.loads(self.conn.recv(timeout=max(deadline - time.monotonic(), 0.1)))
        raise TimeoutError("no SUCCEEDED in time")


def main() -> int:
    print(f"bench/generations_embedded.py on {describe_machine()}; {JOBS} jobs")
    with tempfile.TemporaryDirectory(prefix="bench-gen-") as var:
        env = server_env(
            Path(var),
            WELCOME_CREDITS="100000",
            GENERATIONS_MAX_ACTIVE_PER_USER=str(JOBS + 1),
            GPU_PROGRESS_INTERVAL_S="0.05",
        )
        with Server(env) as server:
            token = sign_up(server.url, "bench-generations@example.com")["accessToken"]
            socket = Socket(server.ws_url, token)
            socket.watch("warm-up", create(server.url, token, "a warm-up clip, neon city"))  # loads the model
            for message in socket.messages():
                if message.get("id") == "warm-up" and message["type"] == "complete":
                    break

            # 1. One at a time: latency with an idle GPU.
            totals, starts = [], []
            cpu_before = server.cpu_seconds()
            for i in range(JOBS):
                started = time.monotonic()
                generation_id = create(server.url, token, f"a person smiling, clip {i}")
                socket.watch(str(i), generation_id)
                first_running = None
                for message in socket.messages():
                    if message.get("id") != str(i) or message["type"] != "next":
                        continue
                    status = message["payload"]["data"]["generationUpdated"]["generation"]["status"]
                    if status == "RUNNING" and first_running is None:
                        first_running = time.monotonic() - started
                    if status == "SUCCEEDED":
                        totals.append(time.monotonic() - started)
                        starts.append(first_running or float("nan"))
                        break
                    if status in ("FAILED", "CANCELED"):
                        raise RuntimeError(f"job {i} ended {status}")
            cpu = (server.cpu_seconds() - cpu_before) / JOBS
            totals.sort()
            starts.sort()
            print(
                f"one at a time: submit -> SUCCEEDED p50 {percentile(totals, 50):.2f} s, "
                f"p99 {percentile(totals, 99):.2f} s, max {totals[-1]:.2f} s; "
                f"submit -> RUNNING p50 {percentile(starts, 50) * 1000:.0f} ms, "
                f"p99 {percentile(starts, 99) * 1000:.0f} ms; server CPU {cpu:.2f} s/job"
            )

            # 2. A burst: every job submitted at once, then all watched to the end.
            started = time.monotonic()
            ids = [create(server.url, token, f"a burst clip {i}") for i in range(JOBS)]
            submitted = time.monotonic() - started
            for i, generation_id in enumerate(ids):
                socket.watch(f"b{i}", generation_id)
            done: set[str] = set()
            for message in socket.messages(timeout=JOBS * 30):
                if message["type"] == "next" and message["id"].startswith("b"):
                    status = message["payload"]["data"]["generationUpdated"]["generation"]["status"]
                    if status == "SUCCEEDED":
                        done.add(message["id"])
                    elif status in ("FAILED", "CANCELED"):
                        raise RuntimeError(f"{message['id']} ended {status}")
                if len(done) == JOBS:
                    break
            wall = time.monotonic() - started
            print(
                f"burst of {JOBS}: submitted in {submitted:.2f} s ({JOBS / submitted:.1f} creates/s), "
                f"all SUCCEEDED after {wall:.1f} s ({JOBS / wall:.2f} jobs/s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
