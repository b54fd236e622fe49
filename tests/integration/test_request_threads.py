"""HTTP requests borrow kept threads (backend/asgi.py RequestThreads): a request neither starts a thread nor
opens a database connection, concurrent requests still run on different threads, and shutdown closes the
kept connections. Driven through Django's real ASGI handler with a view that reports its thread and its
database connection, on the configured database (PostgreSQL under `make test`)."""

import asyncio
import json
import threading

import pytest
from django.db import connection, connections
from django.http import JsonResponse
from django.urls import path

from backend.asgi import PooledThreadsHandler, RequestThreads

pytestmark = pytest.mark.django_db(transaction=True)

barrier: threading.Barrier | None = None


def where(request):
    if barrier is not None:  # both requests must be inside the view at once
        barrier.wait(timeout=10)
    connection.ensure_connection()
    return JsonResponse({"thread": threading.get_ident(), "connection": id(connection.connection)})


urlpatterns = [path("where", where)]


async def get(app, url: str = "/where") -> dict:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": url,
        "raw_path": url.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    requested = False
    sent: list[dict] = []

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect: Django cancels this once the response is sent

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 200, sent
    return json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


@pytest.fixture
def handler(settings):
    settings.ROOT_URLCONF = __name__
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 60
    threads = RequestThreads(keep=4)
    yield PooledThreadsHandler(threads)
    threads.close()


async def test_requests_one_after_another_reuse_one_thread_and_its_connection(handler):
    first = await get(handler)
    second = await get(handler)
    assert second["thread"] == first["thread"]
    assert second["connection"] == first["connection"]
    assert len(handler.threads.idle) == 1


async def test_concurrent_requests_run_on_different_threads(handler):
    global barrier
    barrier = threading.Barrier(2)
    try:
        first, second = await asyncio.gather(get(handler), get(handler))
    finally:
        barrier = None
    assert first["thread"] != second["thread"]
    assert len(handler.threads.idle) == 2
    again = await get(handler)
    assert again["thread"] in {first["thread"], second["thread"]}


async def test_threads_beyond_the_kept_number_end_after_their_request(handler):
    global barrier
    handler.threads.keep = 1
    barrier = threading.Barrier(2)
    try:
        await asyncio.gather(get(handler), get(handler))
    finally:
        barrier = None
    assert len(handler.threads.idle) == 1


async def test_closing_closes_each_kept_threads_connection(handler):
    await get(handler)
    (executor,) = handler.threads.idle
    wrapper = executor.submit(lambda: connections["default"]).result()  # that thread's connection
    assert wrapper.connection is not None
    handler.threads.close()
    assert wrapper.connection is None
    assert handler.threads.idle == []
    await get(handler)  # served after closing: its thread ends instead of being kept
    assert handler.threads.idle == []


inside = 0
most_inside = 0
counting = threading.Lock()


def counted(request):
    """Notes how many requests run their synchronous work at once, staying long enough to overlap."""
    global inside, most_inside
    with counting:
        inside += 1
        most_inside = max(most_inside, inside)
    try:
        threading.Event().wait(0.05)  # asleep, as a thread waiting on the database would be
        return JsonResponse({"thread": threading.get_ident()})
    finally:
        with counting:
            inside -= 1


urlpatterns.append(path("counted", counted))


@pytest.mark.parametrize(("running", "most"), [(1, 1), (2, 2), (0, 4)])
async def test_at_most_running_threads_run_at_once_and_every_request_is_served(settings, running, most):
    global most_inside
    settings.ROOT_URLCONF = __name__
    threads = RequestThreads(keep=4, running=running)
    handler = PooledThreadsHandler(threads)
    most_inside = 0
    try:
        answers = await asyncio.gather(*(get(handler, "/counted") for _ in range(4)))
    finally:
        threads.close()
    assert most_inside == most
    assert len({answer["thread"] for answer in answers}) == 4  # each request on its own thread all the same
