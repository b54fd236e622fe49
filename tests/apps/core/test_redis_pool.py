"""Django's Redis cache shares one connection pool per process (backend/redis_pool.py).

Django makes a cache object per async context, so every request served by the event loop made its own
pool and opened a new connection to Redis. Requests are tasks: each one here reads the cache the way the
auth cache does (`cache.aget`), and all of them go through one pool and reuse its connections.
"""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from django.core.cache import cache, caches

pytestmark = pytest.mark.services


def test_requests_on_the_event_loop_share_one_redis_pool(settings):
    if "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        pytest.skip("the embedded mode's cache is in memory")

    async def request(i: int):
        await cache.aset(f"pool-test:{i}", i)
        assert await cache.aget(f"pool-test:{i}") == i
        backend = caches["default"]
        return backend, backend._cache._get_connection_pool(write=True)

    async def serve():
        return [await asyncio.create_task(request(i)) for i in range(20)]

    served = contextvars.Context().run(asyncio.run, serve())  # a server's loop: no cache object yet
    pools = {id(pool): pool for _, pool in served}
    assert len(pools) == 1
    (pool,) = pools.values()
    # Not one connection per request (earlier tests in this process may have left a few in the pool).
    assert len(pool._available_connections) + len(pool._in_use_connections) < 20
