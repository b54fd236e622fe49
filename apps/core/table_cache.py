"""Small tables that every request reads, kept in each process and trusted while their version holds.

Every create reads the whole catalogue it is checked against: the model routes, the enabled price rules,
the enabled blocked terms. Those tables change when a curator edits them (or a GPU worker's timings move
a route's averages), a handful of times a day against hundreds of reads a second. A `TableCache` keeps
its rows in the process and trusts them only while the table's *version token* in the shared cache
(Redis in the services mode, so every process sees one token) is the one they were read under: one cache
GET per read instead of a query, and a curator's change is seen by every process on its next request.

Every writer bumps the token, at once and again after the commit (like apps/accounts/auth_cache.py: the
first makes this connection's next read see it, the second makes a process that read the old rows while
the transaction was open read them again); the token is read *before* the rows, so rows read after a
bump are never kept under the older token. Writers reach the bump through the model, so none can forget
it: a save or delete of a row of a `versioned_table` (its admin, a management command, a cascade) sends
Django's signals, and its `VersionedQuerySet` bumps on `.update()`, `bulk_create()` and `bulk_update()`,
which send none. Raw SQL and migrations' historical models bump nothing: call `table_version_bump`.
Tokens are random, so one lost from the cache (eviction, a restart, a test's `cache.clear()`) can only
make the rows read again. A request that reads several tables (a create: routes, rules, terms) reads all
their tokens in one round trip with `table_versions_pinned()`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Generic, TypeVar

from django.core.cache import cache
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

logger = logging.getLogger(__name__)

T = TypeVar("T")

_VERSIONED: set[type[models.Model]] = set()  # concrete models whose writes bump their table's token


def _version_key(model: type[models.Model]) -> str:
    return f"table-cache:{model._meta.concrete_model._meta.label_lower}:version"


# The tokens read once for the request in progress (table_versions_pinned): version key -> token.
_pinned: ContextVar[dict[str, str] | None] = ContextVar("table_versions_pinned", default=None)


@contextmanager
def table_versions_pinned() -> Iterator[None]:
    """Reads the tokens of every versioned table in one round trip; `TableCache.get()` inside the block
    uses them (as if each were read at the start of the block) instead of a GET each."""
    keys = [_version_key(model) for model in _VERSIONED]
    try:
        found = cache.get_many(keys)
    except Exception:  # each read below tries the cache again, then the database
        logger.warning("table versions unreadable", exc_info=True)
        found = {}
    reset = _pinned.set(found)
    try:
        yield
    finally:
        _pinned.reset(reset)


def table_version(model: type[models.Model]) -> str | None:
    """The current version token of `model`'s table (made when there is none); None when the shared
    cache cannot say."""
    key = _version_key(model)
    pinned = (_pinned.get() or {}).get(key)
    if pinned is not None:
        return pinned
    try:
        version = cache.get(key)
        if version is None:
            cache.add(key, uuid.uuid4().hex, None)
            version = cache.get(key)
    except Exception:  # the cache is down: the database still answers
        logger.warning("version of %s unreadable; reading the table", key, exc_info=True)
        return None
    return version


def table_version_bump(model: type[models.Model]) -> None:
    """Makes every process read `model`'s table again on its next read (now and after the commit)."""
    key = _version_key(model)

    def bump() -> None:
        try:
            cache.set(key, uuid.uuid4().hex, None)
        except Exception:  # nothing to fall back on: say so loudly
            logger.exception("could not bump the version of %s", key)

    bump()
    transaction.on_commit(bump)


class TableCache(Generic[T]):
    """`load()` (what a process keeps of one table: its rows, or a dict of them) answered from memory
    while `model`'s version token holds. What it returns is shared by every request of the process:
    read it, never change it (copy a row before setting an attribute on it)."""

    def __init__(self, model: type[models.Model], load: Callable[[], T]) -> None:
        if model._meta.concrete_model not in _VERSIONED:
            raise TypeError(f"{model.__name__} is not a versioned_table: its writes would not bump it")
        self._model = model
        self._load = load
        self._entry: tuple[str, T] | None = None  # (version, value), replaced whole: no lock needed

    def get(self) -> T:
        version = table_version(self._model)
        entry = self._entry
        if entry is not None and version is not None and entry[0] == version:
            return entry[1]
        value = self._load()
        if version is not None:
            self._entry = (version, value)
        return value

    def clear(self) -> None:
        self._entry = None


class VersionedQuerySet(models.QuerySet):
    """The writes that send no signal bump the table's version too."""

    def update(self, **kwargs) -> int:
        rows = super().update(**kwargs)
        table_version_bump(self.model)
        return rows

    def bulk_create(self, objs, *args, **kwargs):
        created = super().bulk_create(objs, *args, **kwargs)
        table_version_bump(self.model)
        return created

    def bulk_update(self, objs, fields, *args, **kwargs) -> int:
        rows = super().bulk_update(objs, fields, *args, **kwargs)
        table_version_bump(self.model)
        return rows


def versioned_table(model: type[models.Model]) -> type[models.Model]:
    """Class decorator: a save or delete of a row of `model` (or of a proxy of it) bumps its table's
    version. Give the model `objects = VersionedQuerySet.as_manager()` for the writes without signals."""
    _VERSIONED.add(model)
    return model


@receiver(post_save, dispatch_uid="core.table_cache.saved")
@receiver(post_delete, dispatch_uid="core.table_cache.deleted")
def _row_changed(sender, **kwargs) -> None:
    concrete = getattr(getattr(sender, "_meta", None), "concrete_model", None)
    if concrete in _VERSIONED:
        table_version_bump(concrete)
