"""Access tokens (short-lived signed JWTs) and refresh tokens (opaque, stored hashed, rotating)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import jwt
from django.conf import settings
from django.utils import timezone

ALGORITHM = "HS256"
ISSUER = "diffuse-backend"


def _signing_key() -> str:
    # A key derived for this purpose only, so a leaked token key is not the whole SECRET_KEY.
    return hashlib.sha256(f"access-token:{settings.SECRET_KEY}".encode()).hexdigest()


def access_token_issue(*, user_id: uuid.UUID, now: datetime | None = None) -> tuple[str, datetime]:
    now = now or timezone.now()
    expires_at = now + settings.ACCESS_TOKEN_TTL
    claims = {
        "sub": str(user_id),
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "iss": ISSUER,
        "typ": "access",
    }
    return jwt.encode(claims, _signing_key(), algorithm=ALGORITHM), expires_at


def access_token_user_id(token: str) -> uuid.UUID | None:
    """The user id of a valid, unexpired access token; None for anything else."""
    try:
        claims = jwt.decode(
            token,
            _signing_key(),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["sub", "exp", "iat", "iss"]},
        )
        if claims.get("typ") != "access":
            return None
        return uuid.UUID(claims["sub"])
    except (jwt.PyJWTError, ValueError, TypeError):
        return None


def bearer_token(header_value: str | None) -> str | None:
    if not header_value:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


@dataclass(frozen=True)
class NewRefreshToken:
    token: str
    token_hash: str


def refresh_token_new() -> NewRefreshToken:
    token = secrets.token_urlsafe(48)
    return NewRefreshToken(token=token, token_hash=refresh_token_hash(token))


def refresh_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
