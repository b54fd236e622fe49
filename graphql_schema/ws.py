"""The websocket consumer: `graphql-transport-ws` only, bearer auth in `connection_init`."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import orjson
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from strawberry.channels import GraphQLWSConsumer
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from apps.core.events import listen

from .context import Context, user_from_authorization

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
        of its sockets (apps/core/events.py `listen`).
        """
        async with listen(group) as payloads:
            yield payloads
