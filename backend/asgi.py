"""ASGI entry point: Django over HTTP (GraphQL at /graphql), GraphQL subscriptions over websockets.

    uvicorn backend.asgi:application

In the embedded mode the lifespan starts Dramatiq worker threads for the Django queues in this process.
With APP_ENV=production the safety checks run first and an unsafe configuration does not start.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.urls import re_path  # noqa: E402

from apps.core.checks import production_errors  # noqa: E402
from backend.broker import start_embedded_worker, stop_embedded_worker  # noqa: E402
from graphql_schema.schema import schema  # noqa: E402
from graphql_schema.ws import GraphQLSocket  # noqa: E402

if settings.IS_PRODUCTION:
    problems = production_errors()
    if problems:
        raise ImproperlyConfigured(
            "refusing to start in production: " + "; ".join(f"{p.id}: {p.msg} {p.hint}" for p in problems)
        )


class Lifespan:
    """Handles ASGI lifespan (start/stop the embedded worker); passes everything else on."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if settings.EMBEDDED_WORKER:
                    start_embedded_worker()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                stop_embedded_worker()
                await send({"type": "lifespan.shutdown.complete"})
                return


application = Lifespan(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": URLRouter([re_path(r"^graphql/?$", GraphQLSocket.as_asgi(schema=schema))]),
        }
    )
)
