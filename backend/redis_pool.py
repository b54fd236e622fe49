"""One Redis connection pool per URL per process for Django's cache, whichever cache object asks.

Django keeps its cache objects per async context (`django.utils.connection.BaseConnectionHandler`, an
asgiref `Local`), so every request served by the event loop made its own `RedisCache`, its own pool and
a new TCP connection to Redis (issue 13: about 3% of a createGeneration's server time went to connecting,
seen with py-spy). Django's Redis backend takes a `pool_class` option and asks it `from_url`; this one
hands back the process's pool for that URL and those options. redis-py pools check their pid, so a
forked process starts a pool of its own.
"""

from __future__ import annotations

import threading
from typing import Any

import redis


class SharedConnectionPool(redis.ConnectionPool):
    _pools: dict[tuple[str, str], redis.ConnectionPool] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> redis.ConnectionPool:
        key = (url, repr(sorted(kwargs.items(), key=lambda item: item[0])))
        with cls._lock:
            pool = cls._pools.get(key)
            if pool is None:
                pool = cls._pools[key] = super().from_url(url, **kwargs)
        return pool
