"""`/metrics` on the server: Prometheus' text format, behind a bearer token in production.

With METRICS_TOKEN set, a scrape must send `Authorization: Bearer <METRICS_TOKEN>` (401 otherwise);
without one the endpoint is open, which only development allows (production refuses to start:
apps/core/checks.py). METRICS_ENDPOINT=0 removes it (scrape a private port instead). Workers serve their
own on a separate port (WORKER_METRICS_PORT, GPU_METRICS_PORT), off by default.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from apps.core.metrics import exposition_registry


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            response = HttpResponse("metrics need the bearer token\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return HttpResponse(generate_latest(exposition_registry()), content_type=CONTENT_TYPE_LATEST)
