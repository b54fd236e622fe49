"""The one subscription protocol: join the object's group, read it through its selector, then read it again
for every newer change.

Services publish `{kind, id, sequence}` after each commit (apps/core/events.py). A subscription joins the
group first, so a change committed while it reads is not missed, then yields the current state read
through the selector (which checks access), then, for every message of its kind with a higher sequence
than the last state it sent, reads the state again. A message that is not newer (reordered, older than
the last read, or coalesced into an earlier read) is dropped; no state is ever rebuilt from a message.

The subscriptions of one process that follow the same object for the same user through the same field
share each read after an event (`_SharedReads`): 1,000 sockets of one user hear of a wallet change and the
database is read once, not 1,000 times, each read still through the selector with that user.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable
from typing import Any, TypeVar

from strawberry import Info

from apps.core.errors import NotFound
from apps.core.events import ChangeFeed

from .errors import not_found
from .toolkit import node_pk

T = TypeVar("T")


class _SharedReads:
    """One read per event for the followers of one (loop, field, group, user, load) in this process.

    A read started after a follower received the message of sequence `s` sees every commit up to `s`, so
    any follower waiting for `s` or less may take its result: each follower asks for the sequence of its
    message and joins the latest read if that read was started for that sequence or a later one, else
    starts a new one. Only reads after events are shared: the first read of a subscription must come
    after it joined the group, so it reads alone.
    """

    def __init__(self) -> None:
        self._reads: dict[Hashable, tuple[int, asyncio.Future]] = {}
        self._followers: Counter[Hashable] = Counter()

    def join(self, key: Hashable) -> None:
        self._followers[key] += 1

    def leave(self, key: Hashable) -> None:
        self._followers[key] -= 1
        if self._followers[key] <= 0:
            del self._followers[key]
            self._reads.pop(key, None)

    async def read(self, key: Hashable, sequence: int, load: Callable[[], Awaitable[Any]]) -> Any:
        entry = self._reads.get(key)
        if entry is None or entry[0] < sequence:
            entry = (sequence, asyncio.ensure_future(load()))
            self._reads[key] = entry
        # Shielded: a follower that goes away does not cancel the read the others wait for.
        return await asyncio.shield(entry[1])


_shared_reads = _SharedReads()


def _share_key(info: Info, group: str, kind: str, load: Callable) -> Hashable:
    # The same call site (the load's code) for the same field, group and user reads the same thing.
    user = info.context.user
    return (
        asyncio.get_running_loop(),
        info.field_name,
        group,
        kind,
        getattr(user, "pk", None),
        getattr(load, "__code__", load),
    )


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
    key = _share_key(info, group, kind, load)
    async with info.context.ws.subscribe(group) as messages:
        try:
            current = await load()
        except NotFound:
            raise not_found(what) from None
        yield current
        if finished(current):
            return
        _shared_reads.join(key)
        try:
            async for payload in messages:
                wanted = int(payload.get("sequence") or 0)
                if payload.get("kind") != kind or wanted <= sequence(current):
                    continue
                try:
                    latest = await _shared_reads.read(key, wanted, load)
                except NotFound:
                    return
                if sequence(latest) <= sequence(current):
                    continue
                current = latest
                yield current
                if finished(current):
                    return
        finally:
            _shared_reads.leave(key)


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
