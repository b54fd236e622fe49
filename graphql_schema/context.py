"""The per-operation context: the request (HTTP) or the socket (websocket), and the signed-in user."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apps.accounts.auth_cache import user_get_active_cached
from apps.accounts.tokens import access_token_user_id, bearer_token


@dataclass
class Context:
    request: Any = None
    response: Any = None
    ws: Any = None
    user: Any = None
    request_id: str = ""
    client_ip: str = ""
    connection_params: dict[str, Any] = field(default_factory=dict)
    # A bearer token was sent but is expired or not valid: the client should refresh, not act signed out.
    token_rejected: bool = False
    # Set by `homeScreen`: until when (unix time) this operation's answer may be served from the response
    # cache (graphql_schema/response_cache.py); None when nothing executed said so.
    response_cache_until: float | None = None


async def user_from_authorization(value: str | None):
    """The active user of an `Authorization: Bearer <access token>` value, or None."""
    token = bearer_token(value)
    if not token:
        return None
    user_id = access_token_user_id(token)
    if user_id is None:
        return None
    return await user_get_active_cached(user_id=user_id)


async def context_auth(value: str | None) -> tuple[Any, bool]:
    """(user, token_rejected) for an Authorization header value."""
    user = await user_from_authorization(value)
    return user, bool(value) and user is None
