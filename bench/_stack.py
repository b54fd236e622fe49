"""Shared by the bench scripts: start the ASGI server in a subprocess, percentiles, process CPU time."""

from __future__ import annotations

import collections
import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

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
    """`manage.py migrate`, then uvicorn serving backend.asgi on a free port: one process (one event loop),
    or `processes` uvicorn workers on one listening socket as `manage.py serve --web-processes N` starts
    them (services mode only), sharing one PROMETHEUS_MULTIPROC_DIR as there."""

    def __init__(self, env: dict[str, str], processes: int = 1) -> None:
        self.env = dict(env)
        self.processes = processes
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.web_pids: list[int] = []  # the processes that serve: uvicorn's workers, or the one process
        self._metrics_dir: str | None = None

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
            if self.processes > 1:
                raise RuntimeError("BENCH_PROFILE profiles one server process: run with 1")
            runner = [str(Path(__file__).with_name("_profiled_uvicorn.py")), profile]
        workers = []
        if self.processes > 1:
            workers = [f"--workers={self.processes}"]
            self._metrics_dir = tempfile.mkdtemp(prefix="bench-prometheus-")
            self.env["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
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
                *workers,
            ],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,  # a group of its own: stopping it stops uvicorn's workers too
        )
        try:
            self._wait_until_serving()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_until_serving(self) -> None:
        # A loaded shared machine may need longer (BENCH_START_TIMEOUT_S).
        start_timeout = float(os.environ.get("BENCH_START_TIMEOUT_S", "60"))
        deadline = time.monotonic() + start_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start in {start_timeout:.0f} s")
            time.sleep(0.1)
        self.web_pids = [self.process.pid] if self.processes == 1 else self._wait_for_workers(deadline)

    def _wait_for_workers(self, deadline: float) -> list[int]:
        """Every worker's pid once each has answered a request: a worker accepts only once it is ready."""
        answered: set[int] = set()
        while len(answered) < self.processes:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(answered)} of {self.processes} server processes answered")
            with httpx.Client(timeout=5) as client:  # a new connection each time
                with client.stream("GET", f"{self.url}/healthz") as response:
                    answered.add(self._pid_serving(response.extensions["network_stream"]))
            time.sleep(0.05)
        return sorted(answered)

    def _pid_serving(self, network_stream) -> int:
        client_port = network_stream.get_extra_info("socket").getsockname()[1]
        for child in psutil.Process(self.process.pid).children(recursive=True):
            if any(c.raddr and c.raddr.port == client_port for c in _tcp_connections(child)):
                return child.pid
        raise RuntimeError(f"no server process holds the connection from port {client_port}")

    def pid_by_client_port(self) -> dict[int, int]:
        """{client's port: pid of the server process holding that connection}, for open connections."""
        return {
            conn.raddr.port: pid
            for pid in self.web_pids
            for conn in _tcp_connections(psutil.Process(pid))
            if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == self.port and conn.raddr
        }

    def connections_per_process(self) -> dict[int, int]:
        """Established client connections each serving process holds now."""
        held = collections.Counter(self.pid_by_client_port().values())
        return {pid: held[pid] for pid in self.web_pids}

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
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):  # a worker its supervisor left behind
                os.killpg(self.process.pid, signal.SIGKILL)
        if self._metrics_dir:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def cpu_seconds(self) -> float:
        """CPU time of every serving process (and uvicorn's supervisor, when there is one) so far."""
        assert self.process is not None
        return sum(process_cpu_seconds(pid) for pid in {self.process.pid, *self.web_pids})


def _tcp_connections(process: psutil.Process) -> list:
    try:
        return process.net_connections(kind="tcp")
    except psutil.NoSuchProcess:  # a short-lived helper of multiprocessing, already gone
        return []


def processes_from_env(default: str = "1") -> list[int]:
    """BENCH_PROCESSES=1,2: the server process counts to measure, one after another, in one run."""
    counts = [int(n) for n in os.environ.get("BENCH_PROCESSES", default).split(",") if n.strip()]
    if not counts or min(counts) < 1:
        raise SystemExit(
            f"BENCH_PROCESSES must list counts of 1 or more, got {os.environ['BENCH_PROCESSES']!r}"
        )
    return counts


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all the machine's cores since boot (/proc/stat): the share of the
    machine a measurement left idle shows whether more server processes could have had a core."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


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
