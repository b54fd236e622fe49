"""Organizations' writes: the organization with its service account, members, and API keys (made, used,
revoked). Webhooks are in webhooks.py."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from apps.accounts.throttle import bump_and_check
from apps.core.errors import ValidationFailed

from .exceptions import ApiKeyForbidden, ApiKeyInvalid
from .models import KEY_PREFIX, ApiKey, ApiKeyScope, MemberRole, Membership, Organization

ACCOUNT_EMAIL_DOMAIN = "organizations.invalid"  # RFC 2606: never a real mailbox, never a sign-in


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def organization_create(*, name: str, slug: str = "", owner=None, **options) -> Organization:
    """An organization, its service account (no password: it cannot sign in) and, with `owner`, its
    first member. The account's wallet starts empty; staff grant credits in admin (Wallet)."""
    name = name.strip()
    if not name:
        raise ValidationFailed("Name the organization.", field="name")
    slug = slugify(slug or name)[:60] or uuid.uuid4().hex[:12]
    if Organization.objects.filter(slug=slug).exists():
        raise ValidationFailed("An organization with this slug exists. Choose another.", field="slug")
    account = get_user_model().objects.create_user(f"org-{slug}@{ACCOUNT_EMAIL_DOMAIN}", password=None)
    organization = Organization(name=name, slug=slug, account=account, **options)
    organization.full_clean(exclude=["account"])
    organization.save(force_insert=True)
    if owner is not None:
        Membership.objects.create(organization=organization, user=owner, role=MemberRole.OWNER)
    return organization


def api_key_secret_new() -> tuple[str, str, str]:
    """(secret, prefix, hash) of a new key: `dfk_live_<8 public characters>_<43 secret characters>`."""
    public = secrets.token_hex(4)
    secret = f"{KEY_PREFIX}{public}_{secrets.token_urlsafe(32)}"
    return secret, f"{KEY_PREFIX}{public}", _secret_hash(secret)


def api_key_scopes_clean(scopes) -> list[str]:
    if not isinstance(scopes, list) or not scopes or not set(scopes) <= set(ApiKeyScope.values):
        raise ValidationFailed(f"Scopes are a list of: {', '.join(ApiKeyScope.values)}.", field="scopes")
    return sorted(set(scopes))


@transaction.atomic
def api_key_create(
    *, organization: Organization, name: str, scopes: list[str] | None = None
) -> tuple[ApiKey, str]:
    """A new key and its secret, which is returned this once and never stored."""
    secret, prefix, digest = api_key_secret_new()
    key = ApiKey(
        organization=organization,
        name=name.strip() or "API key",
        prefix=prefix,
        secret_hash=digest,
        scopes=api_key_scopes_clean(scopes if scopes is not None else list(ApiKeyScope.values)),
    )
    key.full_clean(exclude=["organization"])
    key.save(force_insert=True)
    return key, secret


def api_key_revoke(*, key_id) -> bool:
    """Revokes a key at once (its next request is 401). True the first time."""
    now = timezone.now()
    return bool(
        ApiKey.objects.filter(pk=key_id, revoked_at__isnull=True).update(revoked_at=now, updated_at=now)
    )


def api_key_authenticate(*, secret: str, scope: str) -> ApiKey:
    """The live key for `secret`, checked for `scope`, counted and rate-limited per key (in the cache,
    Redis in services mode, so the limit holds across server processes)."""
    if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        raise ApiKeyInvalid()
    key = (
        ApiKey.objects.select_related("organization__account")
        .filter(secret_hash=_secret_hash(secret), revoked_at__isnull=True)
        .first()
    )
    if key is None:
        raise ApiKeyInvalid()
    if scope not in key.scopes:
        raise ApiKeyForbidden(f"This API key lacks the `{scope}` scope. Make a key with it in admin.")
    bump_and_check(
        scope="apikey",
        key=str(key.pk),
        limit=key.organization.requests_per_minute,
        window=60,
        message=f"This key is over its {key.organization.requests_per_minute} requests a minute. Slow down.",
    )
    now = timezone.now()
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=now, request_count=F("request_count") + 1)
    return key
