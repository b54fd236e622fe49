"""The websocket consumer: `graphql-transport-ws` only, bearer auth in `connection_init`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import orjson
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from strawberry.channels import GraphQLWSConsumer
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from apps.core.events import EVENT_TYPE

from .context import Context, user_from_authorization

logger = logging.getLogger(__name__)
# A channel layer forgets group members after its group expiry (a day for channels-redis): a group this
# process has followed for longer than this is added again when another socket joins it.
_GROUP_REFRESH_SECONDS = 3600
_django_json = DjangoJSONEncoder()


class GraphQLSocket(GraphQLWSConsumer):
    def __init__(self, schema) -> None:
        super().__init__(
            schema=schema,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=dt.timedelta(seconds=settings.GRAPHQL_WS_INIT_TIMEOUT_SECONDS),
            max_subscriptions_per_connection=settings.GRAPHQL_WS_MAX_SUBSCRIPTIONS,
            allowed_origins=settings.CORS_ALLOWED_ORIGINS,
        )
        self._user = None

    def encode_json(self, data: object) -> str:
        # orjson, as over HTTP (graphql_schema/views.py): each event is encoded once per socket. A str,
        # because the consumer sends it as a text frame.
        return orjson.dumps(data, default=_django_json.default).decode()

    async def get_context(self, request, response) -> Context:
        client = self.scope.get("client") or ("", 0)
        return Context(request=request, ws=request, user=self._user, client_ip=client[0] or "")

    async def on_ws_connect(self, context: Context) -> dict[str, Any] | None:
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        authorization = params.get("authorization") or params.get("Authorization")
        user = await user_from_authorization(authorization if isinstance(authorization, str) else None)
        if user is None:
            raise ConnectionRejectionError({"code": "UNAUTHENTICATED", "message": "Sign in again."})
        self._user = user
        context.user = user
        return None

    @contextlib.asynccontextmanager
    async def subscribe(self, group: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Joins `group` and yields an iterator of its payloads (see apps/core/events.py).

        The group is joined before this returns, so a subscription can join, then read the current state,
        then follow events without missing one in between. The process listens to each group once for all
        of its sockets (`_ProcessGroups`).
        """
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
