"""Serves the whole stack from one command (what `make run` calls).

Embedded mode: one uvicorn process serving HTTP and websockets, with Dramatiq worker threads for the
Django queues inside it. Services mode (REDIS_URL set): uvicorn plus separate backend worker processes
(`python -m backend.worker`) and the trend scheduler, all stopped together on Ctrl-C.

Services mode may serve from several processes (`--web-processes N`, `WEB_PROCESSES`): uvicorn's own
supervisor starts N workers on one listening socket and restarts one that dies. They share everything that
must be shared through Redis (the channel layer, so an event reaches every process's sockets; the cache that
holds the auth versions, the home screen's version token, persisted queries and throttles) and PostgreSQL;
what each keeps in memory (recent users of tokens, built home screens, validated documents) is checked
against those shared versions or depends only on the request's text. Metrics are summed over every process
(`PROMETHEUS_MULTIPROC_DIR`, below). The embedded mode stays one process: its in-memory channel layer and
in-process broker would split the app in N apps that do not hear each other.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


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
        parser.add_argument(
            "--web-processes",
            type=int,
            default=int(os.environ.get("WEB_PROCESSES", "1")),
            help="server processes (uvicorn workers) in services mode; the embedded mode serves from one",
        )

    def handle(self, *args, host: str, port: int, workers: int, web_processes: int, **options):
        import uvicorn

        services = settings.DRAMATIQ_BROKER == "redis"
        web_processes = self._web_processes(web_processes, services=services)
        # Each process counts its own samples; a scrape reaches one of them, so with several they write
        # them to files in one folder and /metrics sums every process's (apps/core/metrics.py).
        metrics_dir = None
        if web_processes > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            metrics_dir = tempfile.mkdtemp(prefix="prometheus-multiproc-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by every process started below

        demo = json.loads((settings.BASE_DIR / "fixtures" / "demo_account.json").read_text())
        base = f"http://{host}:{port}"
        mode = "services (PostgreSQL/Redis)" if services else "embedded"
        self.stdout.write(f"\n  Mode:      {mode}")
        self.stdout.write(f"  Processes: {self._processes_line(web_processes, workers, services=services)}")
        self.stdout.write(f"  GraphiQL:  {base}/graphql" + ("" if settings.GRAPHQL_IDE else " (IDE off)"))
        self.stdout.write(f"  Websocket: ws://{host}:{port}/graphql (graphql-transport-ws)")
        self.stdout.write(f"  Admin:     {base}/admin/")
        if settings.METRICS_ENDPOINT:
            shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            summed = f" (every process's, summed: PROMETHEUS_MULTIPROC_DIR={shared})" if shared else ""
            self.stdout.write(f"  Metrics:   {base}/metrics{summed}")
        model = "" if settings.MODERATION_IMAGES_DISABLED else settings.MODERATION_IMAGE_MODEL
        self.stdout.write(
            f"  Images:    moderated by {model}"
            if model
            else "  Images:    NOT moderated (no MODERATION_IMAGE_MODEL; prompts still are)"
        )
        self.stdout.write(f"  Demo:      {demo['email']} / {demo['password']}\n\n")
        self.stdout.flush()

        children: list[subprocess.Popen] = []
        if services and not settings.EMBEDDED_WORKER:
            for _ in range(max(workers, 0)):
                children.append(subprocess.Popen([sys.executable, "-m", "backend.worker"]))
            # Enqueues periodic jobs (trend rotation); any number of these enqueue once per interval.
            children.append(subprocess.Popen([sys.executable, "-m", "apps.trends.scheduler"]))
        try:
            uvicorn.run(
                "backend.asgi:application",  # an import string: each worker process imports the app
                host=host,
                port=port,
                workers=web_processes,
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
            if metrics_dir:
                del os.environ["PROMETHEUS_MULTIPROC_DIR"]
                shutil.rmtree(metrics_dir, ignore_errors=True)

    def _web_processes(self, requested: int, *, services: bool) -> int:
        if requested < 1:
            raise CommandError(f"--web-processes (WEB_PROCESSES) must be 1 or more, got {requested}")
        if requested > 1 and not services:
            self.stderr.write(
                f"--web-processes {requested} ignored: the embedded mode (no REDIS_URL) serves from one "
                "process, since its in-memory channel layer and in-process broker do not reach other "
                "processes. Set REDIS_URL and DATABASE_URL (services mode) to serve from several."
            )
            return 1
        return requested

    @staticmethod
    def _processes_line(web_processes: int, workers: int, *, services: bool) -> str:
        if not services:
            return "1 server process with the worker threads (embedded mode serves from one)"
        web = (
            "1 server process"
            if web_processes == 1
            else f"{web_processes} server processes (uvicorn workers sharing the Redis channel layer)"
        )
        if settings.EMBEDDED_WORKER:
            return f"{web}, each with backend worker threads"
        return f"{web}, {max(workers, 0)} backend worker(s), the trend scheduler"
