"""Static files under uvicorn: requests/s, server CPU per request and the server's peak memory while
concurrent clients download GraphiQL's largest script (hashed name, identity encoding) and admin's
stylesheet (gzip), as a browser opening /graphql and /admin/ does.

    .venv/bin/python bench/static_files.py

Needs collectstatic's output in STATIC_ROOT (var/static; `make static`). The server is the embedded
stack in a temporary VAR_DIR with DEBUG off (the production path: files from the manifest, not finders).
Environment: BENCH_SECONDS (default 8), BENCH_CONCURRENCY (default 16).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import ROOT, Server, describe_machine, server_env  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "16"))
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", ROOT / "var" / "static"))


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the high-water mark of resident memory
            return int(line.split()[1]) / 1024
    return float("nan")


async def drive(url: str, encoding: str) -> tuple[int, int]:
    """Requests and bytes received by CONCURRENCY keep-alive clients in SECONDS."""
    done, received = 0, 0
    deadline = time.monotonic() + SECONDS

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal done, received
        while time.monotonic() < deadline:
            async with http.stream("GET", url, headers={"Accept-Encoding": encoding}) as response:
                assert response.status_code == 200, response.status_code
                async for chunk in response.aiter_raw():
                    received += len(chunk)
            done += 1

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(CONCURRENCY)))
    return done, received


def main() -> None:
    manifest = json.loads((STATIC_ROOT / "staticfiles.json").read_text())["paths"]
    files = [
        (manifest.get("graphiql/graphiql.min.js"), "identity"),
        (manifest["admin/css/base.css"], "gzip"),
    ]
    files = [(name, encoding) for name, encoding in files if name]
    print(f"static files under uvicorn: {describe_machine()}, {CONCURRENCY} clients, {SECONDS:.0f} s each")
    with (
        tempfile.TemporaryDirectory() as var,
        Server(server_env(Path(var), STATIC_ROOT=str(STATIC_ROOT))) as server,
    ):
        pid = server.process.pid
        print(f"  server idle: peak RSS {peak_rss_mib(pid):.0f} MiB")
        for name, encoding in files:
            size = (STATIC_ROOT / name).stat().st_size
            cpu_before = server.cpu_seconds()
            done, received = asyncio.run(drive(f"{server.url}/static/{name}", encoding))
            cpu = server.cpu_seconds() - cpu_before
            print(
                f"  {name} ({size / 1024:.0f} KiB on disk, {encoding}): {done / SECONDS:.0f} req/s, "
                f"{received / SECONDS / 2**20:.1f} MiB/s, server CPU {cpu / max(done, 1) * 1000:.2f} ms/req, "
                f"server peak RSS {peak_rss_mib(pid):.0f} MiB"
            )


if __name__ == "__main__":
    main()
