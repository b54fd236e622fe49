"""Serves the whole stack from one command (what `make run` calls).

Embedded mode: one uvicorn process serving HTTP and websockets, with Dramatiq worker threads for the
Django queues inside it. Services mode (REDIS_URL set): uvicorn plus separate backend worker processes
(`python -m backend.worker`), all stopped together on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve HTTP + websockets on HOST:PORT (default 127.0.0.1:8000) with the workers."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--workers",
            type=int,
            default=int(os.environ.get("BACKEND_WORKERS", "1")),
            help="backend worker processes in services mode",
        )

    def handle(self, *args, host: str, port: int, workers: int, **options):
        import uvicorn

        demo = json.loads((settings.BASE_DIR / "fixtures" / "demo_account.json").read_text())
        base = f"http://{host}:{port}"
        mode = "services (PostgreSQL/Redis)" if settings.DRAMATIQ_BROKER == "redis" else "embedded"
        self.stdout.write(f"\n  Mode:      {mode}")
        self.stdout.write(f"  GraphiQL:  {base}/graphql" + ("" if settings.GRAPHQL_IDE else " (IDE off)"))
        self.stdout.write(f"  Websocket: ws://{host}:{port}/graphql (graphql-transport-ws)")
        self.stdout.write(f"  Admin:     {base}/admin/")
        model = "" if settings.MODERATION_IMAGES_DISABLED else settings.MODERATION_IMAGE_MODEL
        self.stdout.write(
            f"  Images:    moderated by {model}"
            if model
            else "  Images:    NOT moderated (no MODERATION_IMAGE_MODEL; prompts still are)"
        )
        self.stdout.write(f"  Demo:      {demo['email']} / {demo['password']}\n\n")
        self.stdout.flush()

        children: list[subprocess.Popen] = []
        if settings.DRAMATIQ_BROKER == "redis" and not settings.EMBEDDED_WORKER:
            for _ in range(max(workers, 0)):
                children.append(subprocess.Popen([sys.executable, "-m", "backend.worker"]))
            # Enqueues periodic jobs (trend rotation); any number of these enqueue once per interval.
            children.append(subprocess.Popen([sys.executable, "-m", "apps.trends.scheduler"]))
        try:
            uvicorn.run(
                "backend.asgi:application",
                host=host,
                port=port,
                lifespan="on",
                log_level="info",
                # JSON logs: uvicorn's records go through the root logger's JSON handler (settings.LOGGING)
                **({"log_config": None} if settings.LOG_FORMAT == "json" else {}),
                ws_max_size=1024 * 1024,
                # websockets' Sans-I/O protocol (uvicorn's default when websockets is installed), named so
                # that bench/_stack.py measures what runs here. No per-message deflate: the frames are a
                # few hundred bytes of JSON (a `next` of walletUpdated is 60), where compressing each one
                # costs CPU per socket per event and saves next to nothing.
                ws="websockets-sansio",
                ws_per_message_deflate=False,
            )
        finally:
            for child in children:
                child.terminate()
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
