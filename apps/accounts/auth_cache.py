"""The active user behind an access token, without a database read on most requests.

Every request with a bearer token needs its user. Reading the row each time cost a database read and a hop
to the one sync thread. Instead each process keeps the users it saw recently (an LRU of
`AUTH_USER_CACHE_SIZE` entries, each trusted for at most `AUTH_USER_CACHE_SECONDS`), and trusts an entry
only while the user's *auth version* in the shared cache (Redis in production, so every process sees it)
is still the one the row was read under: one cache GET per request instead of a query.

Revocation stays exact, not "within the TTL": any save or delete of a user row bumps its version
(`user_auth_version_bump`, connected to `post_save` / `post_delete` below, because Django admin's change
form, its delete and bulk delete, `account_delete`'s deactivation and anything else that writes a user go
through the model, not through one service). The bump happens at once and again after the commit: the
first makes the change visible to this connection's next request (tests, autocommit), the second makes a
request that read the old row while the transaction was open read it again. The version is read *before*
the row, so a row read after a bump is never stored under the older version. A queryset `.update()` on
users sends no signal: there is none in the code, and a new one must call `user_auth_version_bump`.
Versions are random tokens, so one lost from the cache (eviction, restart) can only force a re-read.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from apps.core.cache_async import cache_get

from .models import User
from .selectors import user_get_active

logger = logging.getLogger(__name__)

# A version outlives any entry that was read under it many times over; a version that expired anyway is
# replaced by a new random one, which only makes entries read again.
_VERSION_TIMEOUT_SECONDS = 24 * 3600


def _version_key(user_id: Any) -> str:
    return f"accounts:auth-version:{user_id}"


class _RecentUsers:
    """user id -> (user, version, read at): the process's LRU. Guarded by a lock because sync code (the
    bench's plain view, management commands) may share it with the event loop's thread."""

    def __init__(self) -> None:
        self._entries: OrderedDict[uuid.UUID, tuple[User, str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, user_id: uuid.UUID, version: str) -> User | None:
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is None:
                return None
            user, entry_version, read_at = entry
            if entry_version != version or time.monotonic() - read_at > settings.AUTH_USER_CACHE_SECONDS:
                del self._entries[user_id]
                return None
            self._entries.move_to_end(user_id)
        # A copy per request: a resolver that sets an attribute on its user must not change another's.
        return copy.copy(user)

    def put(self, user: User, version: str) -> None:
        with self._lock:
            self._entries[user.pk] = (copy.copy(user), version, time.monotonic())
            self._entries.move_to_end(user.pk)
            while len(self._entries) > settings.AUTH_USER_CACHE_SIZE:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_recent_users = _RecentUsers()


async def _auth_version(user_id: uuid.UUID) -> str | None:
    """The user's current auth version (created when there is none); None when the cache cannot say."""
    key = _version_key(user_id)
    try:
        version = await cache_get(key)  # no thread hop (apps/core/cache_async.py)
        if version is None:
            await cache.aadd(key, uuid.uuid4().hex, _VERSION_TIMEOUT_SECONDS)
            version = await cache.aget(key)
    except Exception:  # the cache is down: the database still answers, just slower
        logger.warning("auth version of user %s unreadable; reading the user row", user_id, exc_info=True)
        return None
    return version


async def user_get_active_cached(*, user_id: uuid.UUID) -> User | None:
    """`user_get_active`, answered from this process's recent users while their auth version holds."""
    if settings.AUTH_USER_CACHE_SECONDS <= 0:
        return await sync_to_async(user_get_active)(user_id=user_id)
    version = await _auth_version(user_id)
    if version is not None:
        user = _recent_users.get(user_id, version)
        if user is not None:
            return user
    user = await sync_to_async(user_get_active)(user_id=user_id)
    if user is not None and version is not None:
        _recent_users.put(user, version)
    return user


def user_auth_version_bump(*, user_id: Any) -> None:
    """Makes every process read the user's row again on its next request (now and after the commit)."""

    def bump() -> None:
        try:
            cache.set(_version_key(user_id), uuid.uuid4().hex, _VERSION_TIMEOUT_SECONDS)
        except Exception:  # entries still expire after AUTH_USER_CACHE_SECONDS
            logger.exception("could not bump the auth version of user %s", user_id)

    bump()
    transaction.on_commit(bump)


@receiver(post_save, sender=User, dispatch_uid="accounts.auth_cache.saved")
@receiver(post_delete, sender=User, dispatch_uid="accounts.auth_cache.deleted")
def _user_changed(sender, instance: User, **kwargs) -> None:
    user_auth_version_bump(user_id=instance.pk)
