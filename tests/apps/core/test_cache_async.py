"""`cache_get` answers what Django's `cache.get` answers, on the in-process cache and on real Redis."""

import os

import pytest
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

from apps.core.cache_async import cache_get

VALUES = ["a-version-token", 42, -7, {"nested": [1, "two"]}, b"raw bytes", 3.5]


@pytest.fixture
def locmem(settings):
    settings.CACHES = {
        **settings.CACHES,
        "fast-locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "t"},
    }
    yield caches["fast-locmem"]
    caches["fast-locmem"].clear()


@pytest.fixture
def redis_cache(settings):
    settings.CACHES = {
        **settings.CACHES,
        "fast-redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["REDIS_URL"],
            "KEY_PREFIX": "cache-async-test",
        },
    }
    backend = caches["fast-redis"]
    assert isinstance(backend, RedisCache)
    yield backend
    backend.clear()


async def test_the_in_process_cache_is_read_directly(locmem):
    for index, value in enumerate(VALUES):
        locmem.set(f"k{index}", value)
        assert await cache_get(f"k{index}", alias="fast-locmem") == value
    assert await cache_get("missing", "fallback", alias="fast-locmem") == "fallback"


@pytest.mark.services
async def test_redis_is_read_with_an_asyncio_client_and_djangos_key_and_serializer(redis_cache):
    for index, value in enumerate(VALUES):
        redis_cache.set(f"k{index}", value)
        assert await cache_get(f"k{index}", alias="fast-redis") == value == redis_cache.get(f"k{index}")
    assert await cache_get("missing", alias="fast-redis") is None
    redis_cache.delete("k0")
    assert await cache_get("k0", "gone", alias="fast-redis") == "gone"
