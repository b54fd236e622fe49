"""The websocket consumer: `graphql-transport-ws` only, bearer auth in `connection_init`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from strawberry.channels import GraphQLWSConsumer
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)

from .context import Context, user_from_authorization
from .live import encode_json, use_frame_sink


class _TransportHandler(BaseGraphQLTransportWSHandler):
    """Strawberry's `graphql-transport-ws` handler, which lends each operation's task a frame sink: the
    group fan-out of a subscription (graphql_schema/live.py) writes its later `next` frames there,
    encoded once per event, instead of through Strawberry's per-result path."""

    async def run_operation(self, operation: Operation) -> None:
        use_frame_sink(operation.id, self.websocket.ws_consumer.send_frame)
        await super().run_operation(operation)


class GraphQLSocket(GraphQLWSConsumer):
    graphql_transport_ws_handler_class = _TransportHandler

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
        # orjson, as over HTTP (graphql_schema/views.py). A str, because the consumer sends text frames.
        return encode_json(data)

    async def send_frame(self, text: str) -> None:
        """A text frame straight to the ASGI server (an encoded `graphql-transport-ws` message)."""
        await self.base_send({"type": "websocket.send", "text": text})

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
