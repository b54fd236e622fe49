"""The one subscription protocol: join the object's group, read it through its selector, then read it again
for every newer change.

Services publish `{kind, id, sequence}` after each commit (apps/core/events.py). A subscription joins the
group first, so a change committed while it reads is not missed, then yields the current state read
through the selector (which checks access), then, for every message of its kind with a higher sequence
than the last state it sent, reads the state again. A message that is not newer (reordered, older than
the last read, or coalesced into an earlier read) is dropped; no state is ever rebuilt from a message.

The subscriptions of one process that follow the same object for the same user through the same field
share each read after an event (`_SharedReads`): 1,000 sockets of one user hear of a wallet change and the
database is read once, not 1,000 times, each read still through the selector with that user. They share
what follows too: the event object built from that read (`shared_event`) and the execution of each
subscription document on it (`SharedEventExecutor`), so the selection set runs once per (document,
variables, event, user) in the process, not once per socket.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable
from typing import Any, TypeVar

from graphql import ExecutionResult
from strawberry import Info
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

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


class _RecentByIdentity:
    """A small LRU keyed by (object identity, ...): each entry keeps its object, so an id reused by a newer
    object after the first is collected can never match the first's entry."""

    def __init__(self, size: int) -> None:
        self._entries: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()
        self._size = size

    def get(self, key: Hashable, obj: Any) -> Any | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] is not obj:
            return None
        return entry[1]

    def put(self, key: Hashable, obj: Any, value: Any) -> None:
        self._entries[key] = (obj, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


_events = _RecentByIdentity(1024)


def shared_event(row: Any, build: Callable[[Any], T]) -> T:
    """`build(row)`, the same object for every follower handed the same read of `row` (see `follow`), so
    that `SharedEventExecutor` sees one event and executes each document on it once."""
    key = (id(row), build.__code__)
    event = _events.get(key, row)
    if event is None:
        event = build(row)
        _events.put(key, row, event)
    return event


_executions = _RecentByIdentity(1024)


class SharedEventExecutor(StrawberryGraphQLCoreExecutionContext):
    """Executes a subscription document once per event object for all the sockets of one user that run the
    same document with the same variables in this process; the others take the same result.

    Safe because the event object is only shared between followers of the same user (`_share_key`), and
    the key holds the user too; a socket's own first read is its own object, so it executes alone.
    """

    _event = False

    def build_per_event_executor(self, payload: Any):
        executor = super().build_per_event_executor(payload)
        executor._event = True
        return executor

    def execute_operation(self, serially: bool | None = None):
        if not self._event:
            return super().execute_operation(serially)
        key = self._execution_key()
        if key is None:
            return super().execute_operation(serially)
        shared = _executions.get(key, self.root_value)
        if shared is None:
            shared = asyncio.ensure_future(self._execute(serially))
            _executions.put(key, self.root_value, shared)
        # Shielded: a socket that goes away does not cancel the execution the others wait for.
        return asyncio.shield(shared)

    async def _execute(self, serially: bool | None) -> ExecutionResult:
        result = super().execute_operation(serially)
        return await result if self.is_awaitable(result) else result

    def _execution_key(self) -> Hashable | None:
        source = self.operation.loc.source.body if self.operation.loc else None
        if source is None:
            return None
        try:
            variables = tuple(sorted(self.variable_values.coerced.items()))
            hash(variables)
        except TypeError:  # list or object variables: execute alone
            return None
        user = getattr(self.context_value, "user", None)
        return (
            id(self.root_value),
            source,
            self.operation.name and self.operation.name.value,
            variables,
            getattr(user, "pk", None),
        )
