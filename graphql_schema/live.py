"""The one subscription protocol: join the object's group, read it through its selector, then read it again
for every newer change.

Services publish `{kind, id, sequence}` after each commit (apps/core/events.py). A subscription joins the
group first, so a change committed while it reads is not missed, then yields the current state read
through the selector (which checks access), then, for every message of its kind with a higher sequence
than the last state it sent, reads the state again. A message that is not newer (reordered, older than
the last read, or coalesced into an earlier read) is dropped; no state is ever rebuilt from a message.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

from strawberry import Info

from apps.core.errors import NotFound
from apps.core.events import ChangeFeed

from .errors import not_found
from .toolkit import node_pk

T = TypeVar("T")


async def follow(
    info: Info,
    *,
    group: str,
    kind: str,
    load: Callable[[], Awaitable[T]],
    sequence: Callable[[T], int],
    finished: Callable[[T], bool] = lambda _: False,
    what: str = "object",
) -> AsyncGenerator[T, None]:
    """Yields the current state, then each newer one, until `finished` is true of one or the object is
    gone (NotFound on a later read). An object the caller may not see (NotFound on the first read) is a
    NOT_FOUND operation error naming `what`, and no group is joined for it."""
    try:
        await load()
    except NotFound:
        raise not_found(what) from None
    async with info.context.ws.subscribe(group) as messages:
        try:
            current = await load()
        except NotFound:
            raise not_found(what) from None
        yield current
        if finished(current):
            return
        async for payload in messages:
            if payload.get("kind") != kind or int(payload.get("sequence") or 0) <= sequence(current):
                continue
            try:
                latest = await load()
            except NotFound:
                return
            if sequence(latest) <= sequence(current):
                continue
            current = latest
            yield current
            if finished(current):
                return


async def follow_row(
    info: Info,
    feed: ChangeFeed,
    id: str,
    load: Callable[[uuid.UUID], Awaitable[T]],
    *,
    type_name: str,
    what: str,
    finished: Callable[[T], bool] = lambda _: False,
) -> AsyncGenerator[T, None]:
    """`follow` for the row of a ChangeFeed (a generation, a Soul ID) named by a global ID of `type_name`:
    an ID that names nothing the caller may see is the same NOT_FOUND as a missing row."""
    try:
        pk = node_pk(id, type_name)
    except NotFound:
        raise not_found(what) from None
    async for row in follow(
        info,
        group=feed.group(pk),
        kind=feed.kind,
        load=lambda: load(pk),
        sequence=feed.sequence,
        finished=finished,
        what=what,
    ):
        yield row
