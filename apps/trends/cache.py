"""The cache of the shared part of the home screen.

Built screens live in each process's memory, keyed by a *version token* kept in the Django cache (Redis in
the services mode, so every process sees the same token). Staff edits and the rotation job invalidate by
setting a new token after their transaction commits; every process then rebuilds on its next request. A
request therefore costs one cache GET and no SQL when the screen is warm. Entries also expire on their
own: after `TRENDS_SCREEN_CACHE_SECONDS`, or earlier when a section's active window or a trend's retire
time passes (the builder says when).

Beside the screens, the same token keys the *serialized responses* of home screen queries (the GraphQL
view's response cache, issue 13): a response is stored with the expiry of the screen it was made from, so
both go stale together, and a new token retires both at once.
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
# Responses are keyed by document, variables and the user's segment too, so there are more of them; a
# separate LRU keeps them from pushing out the screens they are made from.
MAX_RESPONSES = 4096

_lock = threading.Lock()
_entries: OrderedDict[tuple[str, str], tuple[float, Any]] = OrderedDict()
_responses: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()


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
        _responses.clear()


def screen_cache_invalidate_on_commit() -> None:
    transaction.on_commit(screen_cache_invalidate)


def screen_cache_get_or_build(key: str, build: Callable[[], tuple[Any, float | None]]) -> tuple[Any, float]:
    """(the cached value for `key`, unix time it expires); `build()` -> (value, time it stops being valid
    or None) makes it when missing."""
    token = screen_cache_token()
    now = time.time()
    with _lock:
        entry = _entries.get((token, key))
        if entry is not None and entry[0] > now:
            _entries.move_to_end((token, key))
            return entry[1], entry[0]
    value, valid_until = build()
    expires = now + settings.TRENDS_SCREEN_CACHE_SECONDS
    if valid_until is not None:
        expires = min(expires, valid_until)
    if expires <= now:  # caching off (TRENDS_SCREEN_CACHE_SECONDS=0): nothing to keep
        return value, expires
    with _lock:
        _entries[(token, key)] = (expires, value)
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)
    return value, expires


def response_cache_get(key: str) -> tuple[str, bytes | None]:
    """(the current token, the response stored under `key` for it or None). Pass the token back to
    `response_cache_set`: a response made while a curator's change committed is then stored under the old
    token and never served."""
    token = screen_cache_token()
    with _lock:
        entry = _responses.get((token, key))
        if entry is not None and entry[0] > time.time():
            _responses.move_to_end((token, key))
            return token, entry[1]
    return token, None


def response_cache_set(token: str, key: str, body: bytes, expires: float) -> None:
    if expires <= time.time():
        return
    with _lock:
        _responses[(token, key)] = (expires, body)
        while len(_responses) > MAX_RESPONSES:
            _responses.popitem(last=False)
