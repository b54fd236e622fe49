"""Sign-in and sign-up throttling: failures per account and attempts per client IP, counted in the cache.

The cache is Redis in services mode, so the limits hold across server processes.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.cache import cache

from apps.core.errors import RateLimited


def _key(kind: str, value: str) -> str:
    return f"throttle:login:{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


def _count(key: str) -> int:
    return int(cache.get(key) or 0)


def _bump(key: str, window: int | None = None) -> int:
    window = window or settings.LOGIN_THROTTLE_WINDOW_SECONDS
    if cache.add(key, 1, timeout=window):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window)
        return 1


def login_check(*, email: str, ip: str) -> None:
    """Raises RateLimited before any password work when the account or the IP is over its limit."""
    window = settings.LOGIN_THROTTLE_WINDOW_SECONDS
    if ip and _bump(_key("ip", ip)) > settings.LOGIN_MAX_ATTEMPTS_PER_IP:
        raise RateLimited(retry_after_seconds=window)
    if _count(_key("account", email.lower())) >= settings.LOGIN_MAX_FAILURES_PER_ACCOUNT:
        raise RateLimited(
            retry_after_seconds=window,
            message=f"Too many failed sign-ins for this account. Try again in {window // 60} minutes.",
        )


def login_failed(*, email: str) -> None:
    _bump(_key("account", email.lower()))


def login_succeeded(*, email: str) -> None:
    cache.delete(_key("account", email.lower()))


def signup_check(*, ip: str) -> None:
    """New accounts per client IP per hour: each account brings a welcome grant, so sign-ups are capped."""
    if ip and _bump(_key("signup", ip), window=3600) > settings.SIGNUPS_MAX_PER_IP_PER_HOUR:
        raise RateLimited(
            retry_after_seconds=3600, message="Too many new accounts from this network. Try again in an hour."
        )


def bump_and_check(*, scope: str, key: str, limit: int, window: int, message: str | None = None) -> None:
    """Counts one call of `key` in `scope` and raises RateLimited beyond `limit` calls per `window`."""
    if _bump(f"throttle:{scope}:{hashlib.sha256(key.encode()).hexdigest()[:32]}", window=window) > limit:
        raise RateLimited(retry_after_seconds=window, message=message)
