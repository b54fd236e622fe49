"""The only code that talks to the channel layer (publishing, and listening for the websockets), and the
one message every subscription understands.

Services call `publish_change_on_commit` so that subscribers never hear of a change that was rolled back.
A message is `{kind, id, sequence}`: which object changed and the number of that change, never its
state. A subscription (graphql_schema/live.py) joins the group first, reads the current state through
the object's selector, then reads it again for every message with a higher sequence than it last sent.
Each server process listens to a group once (`listen`), whatever the number of its sockets following it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

EVENT_TYPE = "app.event"
# A channel layer forgets group members after its group expiry (a day for channels-redis): a group this
# process has followed for longer than this is added again when another subscriber joins it.
_GROUP_REFRESH_SECONDS = 3600


def user_group(user_id: Any) -> str:
    return f"user.{user_id}"


def change_message(*, kind: str, id: Any, sequence: int) -> dict[str, Any]:
    return {"kind": kind, "id": str(id), "sequence": int(sequence)}


def publish(group: str, payload: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": EVENT_TYPE, "group": group, "payload": payload})
    except Exception:  # best-effort: the database is the truth, a lost hint is re-synced on reconnect
        logger.exception("could not publish an event to %s", group)


@dataclass(frozen=True)
class ChangeFeed:
    """The changes of one kind of row that subscriptions follow: each change is saved under the row lock
    with the next number in `sequence_field` and told, after the commit, to the row's own group."""

    kind: str
    sequence_field: str
    fields: tuple[str, ...]

    def group(self, row_id: Any) -> str:
        return f"{self.kind}.{row_id}"

    def sequence(self, row: Any) -> int:
        return getattr(row, self.sequence_field)

    def save(self, row: Any) -> None:
        """Saves `fields` of a row the caller holds locked as a new change and tells its group."""
        setattr(row, self.sequence_field, self.sequence(row) + 1)
        row.save(update_fields=[*self.fields, self.sequence_field, "updated_at"])
        publish_change_on_commit(self.group(row.pk), kind=self.kind, id=row.pk, sequence=self.sequence(row))


def publish_change_on_commit(group: str, *, kind: str, id: Any, sequence: int) -> None:
    """Tells the group's subscribers, after the commit, that object `id` of `kind` reached `sequence`."""
    payload = change_message(kind=kind, id=id, sequence=sequence)
    transaction.on_commit(lambda: publish(group, payload))


# --- Listening: one channel per group per process -------------------------------------------------------


@contextlib.asynccontextmanager
async def listen(group: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """Joins `group` for this process (once, whatever the number of listeners) and yields an iterator of
    its payloads; the group is joined before this returns."""
    async with _process_groups().listen(group) as payloads:
        yield payloads


class _ProcessGroups:
    """The channel-layer groups this process's sockets follow, each joined once with one channel.

    Joining the group with each socket's own channel made the layer hand every event to every socket's
    consumer (1,000 receive tasks woken, dispatched and re-armed per event for 1,000 sockets); here one
    reader per group receives the event once and puts it on each follower's queue. One instance per event
    loop (a channel layer's connections belong to a loop).
    """

    def __init__(self) -> None:
        self._groups: dict[str, _ProcessGroup] = {}
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def listen(self, group: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        async with self._lock:
            joined = self._groups.get(group)
            if joined is None:
                joined = self._groups[group] = await _ProcessGroup.join(group)
            elif time.monotonic() - joined.added_at > _GROUP_REFRESH_SECONDS:
                await joined.refresh()
            joined.followers.add(queue)
        try:
            yield _drain(queue)
        finally:
            async with self._lock:
                joined.followers.discard(queue)
                if not joined.followers:
                    del self._groups[group]
                    await joined.leave()


class _ProcessGroup:
    def __init__(self, group: str, channel: str, layer: Any) -> None:
        self.group = group
        self.channel = channel
        self.layer = layer
        self.followers: set[asyncio.Queue] = set()
        self.added_at = time.monotonic()
        self.reader = asyncio.create_task(self._read(), name=f"ws-group {group}")

    @classmethod
    async def join(cls, group: str) -> _ProcessGroup:
        layer = get_channel_layer()
        # The default prefix: channels-redis receives every local channel with that prefix through one
        # Redis list and one lock; another prefix would wait behind the consumers' 5 s blocking reads.
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        return cls(group, channel, layer)

    async def refresh(self) -> None:
        await self.layer.group_add(self.group, self.channel)
        self.added_at = time.monotonic()

    async def leave(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(Exception):
            await self.layer.group_discard(self.group, self.channel)

    async def _read(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # the layer is unreachable: events are hints, the next read catches up
                logger.exception("receiving events of %s failed; retrying", self.group)
                await asyncio.sleep(1)
                continue
            if message.get("type") == EVENT_TYPE and message.get("group") == self.group:
                for queue in self.followers:
                    queue.put_nowait(message["payload"])


async def _drain(queue: asyncio.Queue) -> AsyncIterator[dict[str, Any]]:
    while True:
        yield await queue.get()


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ProcessGroups] = weakref.WeakKeyDictionary()


def _process_groups() -> _ProcessGroups:
    loop = asyncio.get_running_loop()
    groups = _by_loop.get(loop)
    if groups is None:
        groups = _by_loop[loop] = _ProcessGroups()
    return groups
