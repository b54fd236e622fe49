"""Shared by the bench scripts: start the ASGI server in a subprocess, percentiles, process CPU time."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
UVICORN_WS = "websockets-sansio"
PASSWORD = "a-long-bench-password-42"

SIGN_UP = """
mutation ($email: String!, $password: String!) {
  signUp(input: {email: $email, password: $password}) {
    __typename
    ... on AuthPayload { accessToken user { id email credits } }
    ... on Error { code message }
  }
}
"""

# Settings of the development profile that would skew a measurement; the rest comes from the caller.
_CLEARED = ("DATABASE_URL", "REDIS_URL", "APP_ENV", "DEBUG", "STORAGE_BACKEND", "LOG_LEVEL", "VAR_DIR")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update(
        DJANGO_SETTINGS_MODULE="backend.settings",
        VAR_DIR=str(var_dir),  # a temporary folder: the benchmark never touches var/
        DEBUG="0",  # DEBUG keeps every SQL query in memory
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


class Server:
    """`manage.py migrate`, then uvicorn serving backend.asgi on a free port (one process, one event loop)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def __enter__(self) -> Server:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=self.env,
            check=True,
        )
        # BENCH_PROFILE=<file>: the server runs under cProfile, reported to <file> when it stops.
        profile = os.environ.get("BENCH_PROFILE")
        runner = ["-m", "uvicorn"]
        if profile:
            runner = [str(Path(__file__).with_name("_profiled_uvicorn.py")), profile]
        self.process = subprocess.Popen(
            [
                sys.executable,
                *runner,
                "backend.asgi:application",
                "--host=127.0.0.1",
                f"--port={self.port}",
                "--log-level=warning",
                "--no-access-log",
                "--lifespan=on",
                # As `manage.py serve` (apps/core/management/commands/serve.py), unless a benchmark compares
                # the websocket settings (BENCH_UVICORN_WS, BENCH_WS_DEFLATE=1).
                f"--ws={os.environ.get('BENCH_UVICORN_WS', UVICORN_WS)}",
                f"--ws-per-message-deflate={os.environ.get('BENCH_WS_DEFLATE', '0') == '1'}",
            ],
            cwd=ROOT,
            env=self.env,
        )
        # A loaded shared machine may need longer (BENCH_START_TIMEOUT_S).
        start_timeout = float(os.environ.get("BENCH_START_TIMEOUT_S", "60"))
        deadline = time.monotonic() + start_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start in {start_timeout:.0f} s")
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        profile = os.environ.get("BENCH_PROFILE")
        if profile and self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)  # bench/_profiled_uvicorn.py writes its report
            deadline = time.monotonic() + 60
            while not os.path.exists(profile) and time.monotonic() < deadline:
                time.sleep(0.2)
            print(f"server profile: {profile}")
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return process_cpu_seconds(self.process.pid)


def process_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (Linux /proc), all its threads included."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sign_up(url: str, email: str) -> dict:
    response = httpx.post(
        f"{url}/graphql",
        json={"query": SIGN_UP, "variables": {"email": email, "password": PASSWORD}},
        timeout=30,
    )
    response.raise_for_status()
    payload = response.json()["data"]["signUp"]
    if payload["__typename"] != "AuthPayload":
        raise RuntimeError(f"sign-up failed: {payload}")
    return payload


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def describe_machine() -> str:
    import platform

    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{python}, {os.cpu_count()} CPU(s), {platform.machine()}"
