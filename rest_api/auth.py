"""API keys on /v1: `Authorization: Bearer dfk_live_...`, checked for the operation's scope, counted and
rate-limited per key (apps/organizations/services.py). The request's `auth` is the key; `request.auth
.organization.account` is who owns what the key makes."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from apps.organizations.models import ApiKey, ApiKeyScope
from apps.organizations.services import api_key_authenticate


class ApiKeyAuth(HttpBearer):
    openapi_description = "An organization's API key (`dfk_live_...`), made in admin and shown once."

    def __init__(self, scope: str) -> None:
        super().__init__()
        self.scope = scope

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey:
        return api_key_authenticate(secret=token, scope=self.scope)  # raises ApiKeyInvalid/Forbidden


READ = ApiKeyAuth(ApiKeyScope.GENERATIONS_READ)
WRITE = ApiKeyAuth(ApiKeyScope.GENERATIONS_WRITE)
UPLOADS = ApiKeyAuth(ApiKeyScope.UPLOADS_WRITE)


def account_of(request: HttpRequest):
    """The organization's service account: services and selectors check ownership against it."""
    return request.auth.organization.account
