"""REST /v1 batches in the embedded mode: one server process with SQLite, the in-process broker, the
Django worker threads and the GPU lanes (tiny-wan on the CPU), as `make run` runs it.

An organization (credits and its active-generation cap raised for the run) with one API key sends
`BENCH_BATCHES` batches of `BENCH_BATCH_ITEMS` (100) free-prompt DRAFT items to POST /v1/generations/batch
with the GPU busy on nothing yet. Printed: items accepted per second (server wall time of the batch
requests), then the time from the first batch's request to all of its items SUCCEEDED (polling
GET /v1/generations), and jobs/s to drain.

    .venv/bin/python bench/rest_batch.py          # a few minutes on 2 cores (100 tiny jobs)

`BENCH_BATCH_IMAGE_URL=1`: every item also names a selfie by `image_url` (a portrait served by a local
HTTP server in this process; the server runs with IMAGE_URL_ALLOW_LOOPBACK), so accepted/s includes the
fetch, the upload checks and the selfie checks of each item. `BENCH_SKIP_DRAIN=1` stops after accepting.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import ROOT, Server, describe_machine, server_env  # noqa: E402

ITEMS = int(os.environ.get("BENCH_BATCH_ITEMS", "100"))
BATCHES = int(os.environ.get("BENCH_BATCHES", "1"))
IMAGE_URL = os.environ.get("BENCH_BATCH_IMAGE_URL") == "1"
SKIP_DRAIN = os.environ.get("BENCH_SKIP_DRAIN") == "1"


def serve_selfie() -> str:
    """A portrait that passes the selfie checks, served from a thread of this process; its URL."""
    import importlib.util
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    spec = importlib.util.spec_from_file_location(
        "make_photos", ROOT / "fixtures" / "photos" / "make_photos.py"
    )
    make_photos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_photos)
    photo = make_photos.portrait_jpeg()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(photo)))
            self.end_headers()
            self.wfile.write(photo)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/selfie.jpg"


MAKE_ORGANIZATION = """
from apps.credits.services import credits_grant
from apps.organizations.services import api_key_create, organization_create
org = organization_create(name="Bench Co {suffix}", max_active_generations={cap}, requests_per_minute=100000)
credits_grant(user=org.account, amount=10_000_000, reason="bench")
print(api_key_create(organization=org, name="bench")[1])
"""


def organization_key(env: dict[str, str]) -> str:
    code = MAKE_ORGANIZATION.format(suffix=uuid.uuid4().hex[:6], cap=ITEMS * BATCHES + 1)
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip().splitlines()[-1]


def main() -> int:
    what = " with a selfie by image_url each" if IMAGE_URL else ""
    print(f"bench/rest_batch.py on {describe_machine()}; {BATCHES} batch(es) of {ITEMS}{what}")
    selfie_url = serve_selfie() if IMAGE_URL else None
    with tempfile.TemporaryDirectory(prefix="bench-rest-") as var:
        env = server_env(Path(var), GPU_PROGRESS_INTERVAL_S="0.2", IMAGE_URL_ALLOW_LOOPBACK="1")
        with Server(env) as server:
            key = organization_key(env)
            api = httpx.Client(
                base_url=f"{server.url}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=300
            )
            started = time.monotonic()
            accepted, seconds, ids = 0, 0.0, []
            for batch in range(BATCHES):
                items = [
                    {
                        "prompt": f"a lighthouse at dawn, clip {batch}-{n}",
                        "quality": "DRAFT",
                        "duration_seconds": 5,
                        **({"image_url": selfie_url} if selfie_url else {}),
                    }
                    for n in range(ITEMS)
                ]
                sent = time.monotonic()
                response = api.post(
                    "/generations/batch", json={"items": items}, headers={"Idempotency-Key": f"bench-{batch}"}
                )
                seconds += time.monotonic() - sent
                response.raise_for_status()
                body = response.json()
                if body["failed"]:
                    raise RuntimeError(
                        f"batch {batch}: {[r['error'] for r in body['data'] if r['error']][:3]}"
                    )
                accepted += body["accepted"]
                ids += [r["id"] for r in body["data"]]
            print(
                f"accepted {accepted} items in {seconds:.2f} s of batch requests: "
                f"{accepted / seconds:.1f} items/s"
            )

            if SKIP_DRAIN:
                return 0
            pending = set(ids)
            while pending:
                time.sleep(1.0)
                cursor = None
                while True:
                    params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                    page = api.get("/generations", params=params).json()
                    for generation in page["data"]:
                        if generation["status"] in ("FAILED", "CANCELED"):
                            raise RuntimeError(f"{generation['id']} ended {generation['status']}")
                        if generation["status"] == "SUCCEEDED":
                            pending.discard(generation["id"])
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
            total = time.monotonic() - started
            print(
                f"all {len(ids)} SUCCEEDED {total:.1f} s after the first batch request "
                f"({len(ids) / total:.2f} jobs/s, tiny-wan DRAFT on the CPU)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
