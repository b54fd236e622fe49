"""Health endpoints: /healthz says the process is alive; /readyz that its dependencies answer.

They probe the whole deployment (database, broker, embedded worker, storage), so they live in the project
layer, which may import any app, rather than in apps.core, which imports no other app."""

from __future__ import annotations

import logging

import dramatiq
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from apps.storage.backends import get_storage
from backend.embedded import embedded_worker_running

logger = logging.getLogger(__name__)


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    broker = dramatiq.get_broker()
    client = getattr(broker, "client", None)
    if client is not None:  # RedisBroker
        client.ping()
    elif settings.EMBEDDED_WORKER and not embedded_worker_running():
        raise RuntimeError("the embedded worker is not running")


def _storage() -> None:
    get_storage().check()


def readyz(request: HttpRequest) -> JsonResponse:
    checks = {}
    for name, probe in (("database", _database), ("broker", _broker), ("storage", _storage)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            logger.warning("readiness check %s failed: %s", name, exc)
            checks[name] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )
