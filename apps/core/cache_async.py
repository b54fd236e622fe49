"""Reads from the shared cache in async code without a thread hop.

Django's cache API is synchronous: `cache.aget` runs `cache.get` through `sync_to_async`, so a request
waits for a thread (and wakes the event loop again) for what is one in-memory lookup or one Redis GET.
`cache_get` answers the same value the same way:
- the in-process cache (LocMem, the embedded mode): read directly; it takes a short lock, never waits on I/O;
- Redis (services mode): one GET on an asyncio Redis client of the running event loop, decoded with the
  serializer Django's Redis backend wrote it with (same key, same value as `cache.get`);
- any other backend: `cache.aget`.
Writes stay on Django's API (they are rare on the paths that read here).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache, RedisSerializer

_serializer = RedisSerializer()
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def _redis_client(backend: RedisCache):
    """One asyncio client (and connection pool) per event loop: a pool belongs to the loop it was made on."""
    import redis.asyncio

    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = redis.asyncio.Redis.from_url(backend._servers[0])
        _clients[loop] = client
    return client


async def cache_get(key: str, default: Any = None, alias: str = "default") -> Any:
    backend = caches[alias]
    if isinstance(backend, LocMemCache):
        return backend.get(key, default)
    if isinstance(backend, RedisCache) and len(backend._servers) == 1:
        raw = await _redis_client(backend).get(backend.make_and_validate_key(key))
        return default if raw is None else _serializer.loads(raw)
    return await backend.aget(key, default)
