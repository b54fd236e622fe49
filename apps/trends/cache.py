"""The cache of the shared part of the home screen.

Built screens live in each process's memory, keyed by a *version token* kept in the Django cache (Redis in
the services mode, so every process sees the same token). Staff edits and the rotation job invalidate by
setting a new token after their transaction commits; every process then rebuilds on its next request. A
request therefore costs one cache GET and no SQL when the screen is warm. Entries also expire on their
own: after `TRENDS_SCREEN_CACHE_SECONDS`, or earlier when a section's active window or a trend's retire
time passes (the builder says when).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

VERSION_KEY = "trends:screen:version"
MAX_ENTRIES = 512

_lock = threading.Lock()
_entries: OrderedDict[tuple[str, str], tuple[float, Any]] = OrderedDict()


def screen_cache_token() -> str:
    token = cache.get(VERSION_KEY)
    if token is None:
        cache.add(VERSION_KEY, uuid.uuid4().hex, None)
        token = cache.get(VERSION_KEY) or uuid.uuid4().hex
    return token


def screen_cache_invalidate() -> None:
    cache.set(VERSION_KEY, uuid.uuid4().hex, None)
    with _lock:
        _entries.clear()


def screen_cache_invalidate_on_commit() -> None:
    transaction.on_commit(screen_cache_invalidate)


def screen_cache_get_or_build(key: str, build: Callable[[], tuple[Any, float | None]]) -> Any:
    """The cached value for `key`, or `build()` -> (value, unix time it stops being valid or None)."""
    token = screen_cache_token()
    now = time.time()
    with _lock:
        entry = _entries.get((token, key))
        if entry is not None and entry[0] > now:
            _entries.move_to_end((token, key))
            return entry[1]
    value, valid_until = build()
    expires = now + settings.TRENDS_SCREEN_CACHE_SECONDS
    if valid_until is not None:
        expires = min(expires, valid_until)
    with _lock:
        _entries[(token, key)] = (expires, value)
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)
    return value
