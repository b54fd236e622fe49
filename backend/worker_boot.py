"""Module that Dramatiq's CLI imports in each backend worker process: sets up Django and its actors."""

from backend.worker import setup

setup()

# Each backend worker process may serve its metrics on a port of its own (off by default).
from django.conf import settings  # noqa: E402

if settings.WORKER_METRICS_PORT:
    from prometheus_client import start_http_server

    from apps.core.metrics import exposition_registry

    start_http_server(settings.WORKER_METRICS_PORT, registry=exposition_registry())

if settings.GC_FREEZE_AT_START:
    # As the server does (backend/asgi.py): Django, the actors and their modules live as long as the process,
    # so full collections need not walk them while events and jobs are handled.
    import gc

    gc.collect()
    gc.freeze()
