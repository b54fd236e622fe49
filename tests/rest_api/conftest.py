from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from apps.credits.services import credits_grant
from apps.organizations.models import Organization
from apps.organizations.services import api_key_create, organization_create


@dataclass
class Client:
    """An organization's API client on the live server."""

    base: str
    key: str
    organization: Organization

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.base}/v1{path}", headers=headers, timeout=60, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.request("GET", path, **kwargs)


@pytest.fixture
def rest_settings(settings):
    settings.GENERATIONS_ROUTE_OVERRIDE = "tiny-wan"
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    settings.WEBHOOKS_RETRY_DELAYS_SECONDS = [0.2, 0.4, 0.8]
    settings.STORAGE_BACKEND = "local"
    return settings


@pytest.fixture
def make_org(rest_settings, shipped_routes):
    def _make(name: str = "Acme Videos", credits: int = 1000, **options) -> tuple[Organization, str]:
        organization = organization_create(name=name, **options)
        if credits:
            credits_grant(user=organization.account, amount=credits, reason="test")
        _, secret = api_key_create(organization=organization, name="pipeline")
        return organization, secret

    return _make


@pytest.fixture
def api(asgi_server, make_org):
    def _client(name: str = "Acme Videos", **options) -> Client:
        organization, secret = make_org(name, **options)
        return Client(base=asgi_server.url, key=secret, organization=organization)

    return _client
