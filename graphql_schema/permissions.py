from __future__ import annotations

from strawberry import Info

from .errors import unauthenticated


def require_user(info: Info):
    """The signed-in user, or a top-level UNAUTHENTICATED error."""
    user = info.context.user
    if user is None:
        raise unauthenticated(expired=info.context.token_rejected)
    return user


def client_ip(info: Info) -> str:
    return info.context.client_ip
