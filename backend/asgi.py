"""ASGI entry point: Django over HTTP (GraphQL at /graphql), GraphQL subscriptions over websockets.

    uvicorn backend.asgi:application

In the embedded mode the lifespan starts Dramatiq worker threads for the Django queues in this process.
With APP_ENV=production the safety checks run first and an unsafe configuration does not start.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import queue
import uuid
from concurrent.futures import ThreadPoolExecutor

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
django.setup(set_prefix=False)

from asgiref.sync import ThreadSensitiveContext, sync_to_async  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.db import connections  # noqa: E402
from django.urls import re_path  # noqa: E402

from apps.core.checks import production_errors  # noqa: E402
from apps.core.metrics import WEBSOCKETS  # noqa: E402
from backend.embedded import start_embedded_worker, stop_embedded_worker  # noqa: E402
from gpu_worker.contract import log_context_bind  # noqa: E402
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
                request_threads.closed = False  # a server started again in the same process (tests)
                if settings.EMBEDDED_WORKER:
                    start_embedded_worker()
                if settings.GC_FREEZE_AT_START:
                    # What start-up made (Django, the schema, models' metadata, in the embedded mode torch)
                    # lives as long as the process: move it out of the collector's generations, so that a
                    # full collection no longer walks it again and again while serving (bench/README.md).
                    gc.collect()
                    gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                stop_embedded_worker()
                await asyncio.to_thread(request_threads.close)
                # and the connection of the thread that websocket consumers' database calls share
                await sync_to_async(connections.close_all)()
                await send({"type": "lifespan.shutdown.complete"})
                return


class WebsocketObserver:
    """Counts open websockets (the `websocket_connections` gauge) and gives each connection a request id
    in the log context, so a subscription's records can be told apart. HTTP passes straight through."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        log_context_bind(request_id=uuid.uuid4().hex)  # this connection's task: its context ends with it
        accepted = False

        async def counting_send(message):
            nonlocal accepted
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                WEBSOCKETS.inc()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if accepted:
                WEBSOCKETS.dec()


class GatedExecutor(ThreadPoolExecutor):
    """A one-thread executor whose calls first pass `gate`, shared by every request's thread: a queue of
    tokens (a C queue, whose get and put cost a fraction of `threading.Semaphore`'s Python lock dance).

    Each request keeps its own thread (and so its own database connection), but at most the gate's count of
    them run Python at once: the others wait on the gate, asleep, instead of taking turns at the GIL. With
    twenty requests each on its own thread, every database call released the GIL and handed it to another
    thread: about 900 context switches per uncached home screen, and a third more CPU per request than the
    same requests one after another (bench/README.md, "the GIL convoy")."""

    def __init__(self, gate: queue.SimpleQueue | None) -> None:
        super().__init__(max_workers=1, thread_name_prefix="request")
        self.gate = gate

    def submit(self, fn, /, *args, **kwargs):
        if self.gate is None:
            return super().submit(fn, *args, **kwargs)
        return super().submit(_through_gate, self.gate, fn, args, kwargs)


def _through_gate(gate: queue.SimpleQueue, fn, args, kwargs):
    token = gate.get()
    try:
        return fn(*args, **kwargs)
    finally:
        gate.put(token)


class RequestThreads:
    """The threads HTTP requests run their synchronous work on (database queries, Django's signals): each
    request borrows one thread for its whole life and gives it back, instead of Django's default of a new
    thread per request (its ASGIHandler enters a fresh `ThreadSensitiveContext` per request, whose
    executor is shut down at the end). A kept thread keeps its database connection between requests
    (CONN_MAX_AGE, checked by Django at each request's start and end), so a request neither starts a
    thread nor opens a connection. At most `keep` idle threads are kept; a burst beyond that gets fresh
    threads, which close their connections and end when given back. At most `running` of the threads run
    their calls at once (`GatedExecutor`; 0: no limit)."""

    def __init__(self, keep: int, running: int = 0) -> None:
        self.keep = keep
        self.gate: queue.SimpleQueue | None = None
        if running > 0:
            self.gate = queue.SimpleQueue()
            for token in range(running):
                self.gate.put(token)
        self.idle: list[ThreadPoolExecutor] = []
        self.closed = False

    def borrow(self) -> ThreadPoolExecutor:
        if self.idle:
            return self.idle.pop()
        return GatedExecutor(self.gate)

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        if len(self.idle) < self.keep and not self.closed:
            self.idle.append(executor)
            return
        executor.submit(connections.close_all)
        executor.shutdown(wait=False)

    def close(self) -> None:
        """At shutdown: each kept thread closes its database connections and ends (a request still running
        ends its thread when it gives it back)."""
        self.closed = True
        while self.idle:
            executor = self.idle.pop()
            executor.submit(connections.close_all).result()
            executor.shutdown()


class PooledThreadsHandler(ASGIHandler):
    """Django's ASGI handler, with each request's synchronous work on a thread of `RequestThreads`."""

    def __init__(self, threads: RequestThreads) -> None:
        super().__init__()
        self.threads = threads

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django serves HTTP only, not {scope['type']}")
        executor = self.threads.borrow()
        try:
            # The caller owns the executor: asgiref does not shut it down on exit.
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self.threads.give_back(executor)


class LeanGraphQLHandler(PooledThreadsHandler):
    """Django for /graphql with only `GRAPHQL_MIDDLEWARE` (security headers, request id, CORS): the API
    authenticates by bearer token, so sessions, CSRF, auth and messages would only cost thread hops."""

    def load_middleware(self, is_async=False) -> None:
        # BaseHandler builds its chain from settings.MIDDLEWARE alone: lend it the short list meanwhile
        # (once, at start-up, before any request).
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.GRAPHQL_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


class GraphQLPathRouter:
    """HTTP requests for /graphql go to the lean handler, everything else to Django with all middleware."""

    PATHS = frozenset({"/graphql", "/graphql/"})

    def __init__(self, graphql_app, app) -> None:
        self.graphql_app, self.app = graphql_app, app

    async def __call__(self, scope, receive, send) -> None:
        app = self.graphql_app if scope.get("path") in self.PATHS else self.app
        return await app(scope, receive, send)


class BodySizeLimit:
    """Refuses HTTP request bodies over a limit before Django buffers them (to memory or a temp file).

    Uploads to the embedded storage may carry one file (UPLOAD_MAX_BYTES plus form overhead); every other
    route, GraphQL included, gets MAX_REQUEST_BYTES. A declared Content-Length over the limit is answered
    413 at once; a streamed body that grows past it is cut off with 413.
    """

    UPLOAD_PREFIX = "/storage/upload/"

    def __init__(self, app) -> None:
        self.app = app

    def limit(self, path: str) -> int:
        if path.startswith(self.UPLOAD_PREFIX):
            return settings.UPLOAD_MAX_BYTES + 64 * 1024
        return settings.MAX_REQUEST_BYTES

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit(scope.get("path", ""))
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return await self._too_large(send, scope)
        received = 0
        refused = False

        async def limited_receive():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)
        if refused:
            await self._too_large(send, scope)

    async def _too_large(self, send, scope) -> None:
        message = "The request body is too large."
        if scope.get("path", "").startswith(self.UPLOAD_PREFIX):  # storage speaks S3's error shape
            payload = {"error": {"code": "EntityTooLarge", "message": message}}
        else:
            payload = {"errors": [{"message": message, "extensions": {"code": "PAYLOAD_TOO_LARGE"}}]}
        body = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


request_threads = RequestThreads(
    keep=settings.HTTP_REQUEST_THREADS, running=settings.HTTP_REQUEST_THREADS_RUNNING
)
application = Lifespan(
    BodySizeLimit(
        WebsocketObserver(
            ProtocolTypeRouter(
                {
                    "http": GraphQLPathRouter(
                        LeanGraphQLHandler(request_threads), PooledThreadsHandler(request_threads)
                    ),
                    "websocket": URLRouter([re_path(r"^graphql/?$", GraphQLSocket.as_asgi(schema=schema))]),
                }
            )
        )
    )
)
