"""The one subscription protocol: join the object's group, read it through its selector, then read it again
for every newer change.

Services publish `{kind, id, sequence}` after each commit (apps/core/events.py). A subscription joins the
group first, so a change committed while it reads is not missed, then yields the current state read
through the selector (which checks access), then, for every message of its kind with a higher sequence
than the last state it sent, reads the state again. A message that is not newer (reordered, older than
the last read, or coalesced into an earlier read) is dropped; no state is ever rebuilt from a message.

Each process follows a group once (`_LiveGroup`, over apps/core/events.py `listen`), whatever the number of
its sockets, and does the work of an event once where the result is the same: the followers of one
object for one user through one field share one read (still through the selector with that user); each
subscription document runs once on it per (document, variables, user) (`SharedEventExecutor`) and its
`next` payload is encoded once; each socket gets that frame with its own operation id spliced in and
writes it from its own task. A socket's own work per event is a queue hand-off and the frame write: the
Python layers between a result and the socket (the subscription's generators, graphql-core's per-event
mapping, Strawberry's per-result handling and message building) cost about twice the write itself with
1,000 sockets (bench/README.md). Results with errors, finished states and the first state still go
through Strawberry, as before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Hashable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from django.core.serializers.json import DjangoJSONEncoder
from graphql import ExecutionResult
from strawberry import Info
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from apps.core.errors import NotFound
from apps.core.events import ChangeFeed, listen

from .errors import not_found
from .toolkit import node_pk

T = TypeVar("T")
logger = logging.getLogger(__name__)
_django_json = DjangoJSONEncoder()


_GONE = object()  # put on a follower's inbox when its object can no longer be read: the subscription ends


@dataclass(frozen=True)
class FrameSink:
    """Where the fan-out's `next` messages for one subscription go without Strawberry: the operation's id
    (JSON) and its socket's text-frame send. The websocket transport sets it for each operation
    (`use_frame_sink`); without one, every result goes through Strawberry."""

    id_json: str
    send: Callable[[str], Awaitable[None]]


_frame_sink: ContextVar[FrameSink | None] = ContextVar("live_frame_sink", default=None)
# The subscription's executor, set when it executes its first state (`SharedEventExecutor`), so that the
# fan-out can execute the same document on later events.
_event_executor: ContextVar[SharedEventExecutor | None] = ContextVar("live_event_executor", default=None)


def use_frame_sink(operation_id: str, send: Callable[[str], Awaitable[None]]) -> None:
    """Called by the websocket transport in an operation's task, before the operation runs."""
    _frame_sink.set(FrameSink(encode_json(operation_id), send))


def encode_json(data: object) -> str:
    """The socket's JSON: orjson, with Django's encoder for what orjson does not know."""
    return orjson.dumps(data, default=_django_json.default).decode()


class _Inbox:
    """A follower's states waiting for its socket. Each is a whole state, so a newer one replaces a state
    still waiting: a socket that reads slowly (or not at all) gets the latest state, not every one, and
    what waits for it stays bounded. A final state and the end (`_GONE`) are never replaced."""

    def __init__(self) -> None:
        self._items: collections.deque = collections.deque()
        self._ready = asyncio.Event()

    def put_nowait(self, item) -> None:
        last = self._items[-1] if self._items else _GONE
        if last is not _GONE and not last[2]:  # (frame, root, finished) of a state that is not the last
            self._items[-1] = item
        else:
            self._items.append(item)
        self._ready.set()

    async def get(self):
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class _Follower:
    """One subscription following one group: its inbox, and the sequence of the last state it sent."""

    def __init__(self, *, kind: str, share_key: Hashable, load, sequence, present, finished) -> None:
        self.kind = kind
        self.share_key = share_key
        self.load = load
        self.sequence_of = sequence
        self.present = present
        self.finished = finished
        self.inbox = _Inbox()
        self.sequence: int | None = None  # None until its first state has been sent
        self.missed = 0  # the newest sequence announced before that
        self.sink: FrameSink | None = None
        self.executor: SharedEventExecutor | None = None
        self.document_key: Hashable | None = None

    def ready(self, sequence: int) -> None:
        self.sequence = sequence
        self.sink = _frame_sink.get()
        self.executor = _event_executor.get()
        if self.executor is not None:
            self.document_key = self.executor.document_key()


class _LiveGroup:
    """The followers of one group in this process and the one task that hands them its events.

    Per event, the followers that share a read (`_share_key`: same field, group, user and load) are read
    once, through the selector with their user, and each subscription document is executed and encoded
    once on the result; each follower then gets the finished `next` frame (its id spliced in) on its own
    inbox, which its own task writes to its socket. A follower is never awaited here, so a socket that
    does not read delays nobody else, and its inbox keeps its order (a newer state replacing one that waits).
    """

    def __init__(self, group: str) -> None:
        self.group = group
        self.followers: set[_Follower] = set()
        self.joined = asyncio.Event()
        self.join_error: BaseException | None = None
        self.task = asyncio.create_task(self._run(), name=f"live {group}")

    async def wait_joined(self) -> None:
        await self.joined.wait()
        if self.join_error is not None:
            raise self.join_error

    async def _run(self) -> None:
        try:
            async with listen(self.group) as payloads:
                self.joined.set()
                async for payload in payloads:
                    try:
                        await self._deliver(payload)
                    except Exception:  # a bug here must not stop the group: events are hints
                        logger.exception("delivering an event of %s failed", self.group)
        except Exception as error:  # could not join (the channel layer is unreachable)
            if not self.joined.is_set():
                self.join_error = error
                self.joined.set()
            raise

    async def _deliver(self, payload: dict[str, Any]) -> None:
        kind, wanted = payload.get("kind"), int(payload.get("sequence") or 0)
        reads: dict[Hashable, list[_Follower]] = {}
        for follower in self.followers:
            if follower.kind != kind:
                continue
            if follower.sequence is None:
                follower.missed = max(follower.missed, wanted)
            elif wanted > follower.sequence:
                reads.setdefault(follower.share_key, []).append(follower)
        for followers in reads.values():
            await self._read_and_hand_out(followers)

    async def _read_and_hand_out(self, followers: list[_Follower]) -> None:
        first = followers[0]
        try:
            latest = await first.load()
        except NotFound:
            for follower in followers:
                follower.inbox.put_nowait(_GONE)
            return
        sequence, finished = first.sequence_of(latest), first.finished(latest)
        root = first.present(latest)
        payloads: dict[Hashable, str | None] = {}
        for follower in followers:
            if sequence <= follower.sequence:
                continue
            follower.sequence = sequence
            frame = None
            if not finished and follower.sink is not None and follower.executor is not None:
                key = follower.document_key or follower
                if key not in payloads:
                    payloads[key] = await _next_payload(follower.executor, root)
                if payloads[key] is not None:
                    frame = f'{{"id":{follower.sink.id_json},"type":"next","payload":{payloads[key]}}}'
            follower.inbox.put_nowait((frame, root, finished))


async def _next_payload(executor: SharedEventExecutor, root: Any) -> str | None:
    """The `next` payload of a document on an event, encoded, or None when it has errors: errors go
    through Strawberry (masking, logging) on each follower's own path."""
    result = executor.execute_event(root)
    if executor.is_awaitable(result):
        result = await result
    if result.errors:
        return None
    return _encode_payload({"data": result.data})


def _encode_payload(payload: dict[str, Any]) -> str:
    return encode_json(payload)


class _LiveGroups:
    """This process's live groups, one per group followed (one instance per event loop)."""

    def __init__(self) -> None:
        self._groups: dict[str, _LiveGroup] = {}

    @contextlib.asynccontextmanager
    async def follow(self, group: str, follower: _Follower) -> AsyncIterator[None]:
        live = self._groups.get(group)
        if live is None:
            live = self._groups[group] = _LiveGroup(group)
        live.followers.add(follower)
        try:
            await live.wait_joined()  # joined before the caller reads its first state
            yield
        finally:
            live.followers.discard(follower)
            if not live.followers and self._groups.get(group) is live:
                del self._groups[group]
                live.task.cancel()


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LiveGroups] = weakref.WeakKeyDictionary()


def _live_groups() -> _LiveGroups:
    loop = asyncio.get_running_loop()
    groups = _by_loop.get(loop)
    if groups is None:
        groups = _by_loop[loop] = _LiveGroups()
    return groups


def _share_key(info: Info, group: str, kind: str, load: Callable) -> Hashable:
    # The same call site (the load's code) for the same field, group and user reads the same thing.
    user = info.context.user
    return (
        info.field_name,
        group,
        kind,
        getattr(user, "pk", None),
        getattr(load, "__code__", load),
    )


def _same(value: Any) -> Any:
    return value


def _never(_: Any) -> bool:
    return False


async def follow(
    info: Info,
    *,
    group: str,
    kind: str,
    load: Callable[[], Awaitable[T]],
    sequence: Callable[[T], int],
    present: Callable[[T], Any] = _same,
    finished: Callable[[T], bool] = _never,
    what: str = "object",
) -> AsyncGenerator[Any, None]:
    """Yields `present` of the current state, then of each newer one, until `finished` is true of one or
    the object is gone (NotFound on a later read). An object the caller may not see (NotFound on the first
    read) is a NOT_FOUND operation error naming `what`, and no group is joined for it.

    After the first state, the group's fan-out (`_LiveGroup`) reads each newer state once for all the
    followers that share it and hands this one its finished `next` frame, which is written here straight
    to the socket; a result with errors, a finished state, or a transport without a frame sink is yielded
    through Strawberry instead.
    """
    try:
        await load()
    except NotFound:
        raise not_found(what) from None
    follower = _Follower(
        kind=kind,
        share_key=_share_key(info, group, kind, load),
        load=load,
        sequence=sequence,
        present=present,
        finished=finished,
    )
    async with _live_groups().follow(group, follower):
        try:
            current = await load()
        except NotFound:
            raise not_found(what) from None
        while True:
            yield present(current)
            if finished(current):
                return
            if follower.missed <= sequence(current):
                break
            # Changed while this state was being sent: read again, alone (the others are past it).
            try:
                latest = await load()
            except NotFound:
                return
            if sequence(latest) <= sequence(current):
                break
            current = latest
        follower.ready(sequence(current))
        while True:
            item = await follower.inbox.get()
            if item is _GONE:
                return
            frame, root, done = item
            if frame is not None:
                await follower.sink.send(frame)
                continue
            yield root
            if done:
                return


async def follow_row(
    info: Info,
    feed: ChangeFeed,
    id: str,
    load: Callable[[uuid.UUID], Awaitable[T]],
    *,
    type_name: str,
    what: str,
    present: Callable[[T], Any] = _same,
    finished: Callable[[T], bool] = _never,
) -> AsyncGenerator[Any, None]:
    """`follow` for the row of a ChangeFeed (a generation, a Soul ID) named by a global ID of `type_name`:
    an ID that names nothing the caller may see is the same NOT_FOUND as a missing row."""
    try:
        pk = node_pk(id, type_name)
    except NotFound:
        raise not_found(what) from None
    async for value in follow(
        info,
        group=feed.group(pk),
        kind=feed.kind,
        load=lambda: load(pk),
        sequence=feed.sequence,
        present=present,
        finished=finished,
        what=what,
    ):
        yield value


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
    the key holds the user too; a socket's own first read is its own object, so it executes alone. The
    subscription's executor is also remembered in its task (`_event_executor`), so that the group's
    fan-out can execute the document on later events (`execute_event`).
    """

    _event = False

    def build_per_event_executor(self, payload: Any):
        _event_executor.set(self)
        executor = super().build_per_event_executor(payload)
        executor._event = True
        return executor

    def execute_event(self, root: Any):
        """The document executed on `root` alone (the fan-out shares it itself, by `document_key`)."""
        executor = super().build_per_event_executor(root)
        executor._event = True
        return StrawberryGraphQLCoreExecutionContext.execute_operation(executor, False)

    def execute_operation(self, serially: bool | None = None):
        if not self._event:
            return super().execute_operation(serially)
        key = self.document_key()
        if key is None:
            return super().execute_operation(serially)
        key = (id(self.root_value), *key)
        shared = _executions.get(key, self.root_value)
        if shared is None:
            shared = asyncio.ensure_future(self._execute(serially))
            _executions.put(key, self.root_value, shared)
        # Shielded: a socket that goes away does not cancel the execution the others wait for.
        return asyncio.shield(shared)

    async def _execute(self, serially: bool | None) -> ExecutionResult:
        result = super().execute_operation(serially)
        return await result if self.is_awaitable(result) else result

    def document_key(self) -> tuple | None:
        """What makes two subscriptions' results on one event the same, or None if they cannot share."""
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
            source,
            self.operation.name and self.operation.name.value,
            variables,
            getattr(user, "pk", None),
        )
