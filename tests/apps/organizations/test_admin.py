"""Admin: an organization is made with its service account; a new API key's secret is shown once (only
its hash is stored) and it authenticates; revoking ends it; an endpoint on a private address is refused;
a delivery is replayed with the same webhook-id."""

from __future__ import annotations

import hashlib
import re

import pytest
from django.contrib.messages import get_messages
from django.db import transaction

from apps.accounts.models import User
from apps.organizations.exceptions import ApiKeyInvalid
from apps.organizations.models import ApiKey, Organization, WebhookDelivery, WebhookEndpoint
from apps.organizations.services import api_key_authenticate, organization_create
from apps.organizations.webhooks import webhook_endpoint_create, webhook_event_emit

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    client.force_login(User.objects.create_superuser("admin@example.com", "a-long-test-password-42"))
    return client


def test_staff_make_an_organization_and_a_key_whose_secret_is_shown_once(staff):
    response = staff.post(
        "/admin/organizations/organization/add/",
        {
            "name": "Acme Videos",
            "slug": "acme",
            "max_active_generations": 10,
            "requests_per_minute": 100,
            "memberships-TOTAL_FORMS": 0,
            "memberships-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302, response.content[:2000]
    organization = Organization.objects.get(slug="acme")
    assert organization.account.email == "org-acme@organizations.invalid"
    assert not organization.account.has_usable_password()

    response = staff.post(
        "/admin/organizations/apikey/add/",
        {"organization": organization.pk, "name": "pipeline", "scopes": '["generations:read"]'},
        follow=True,
    )
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    secrets = [m for text in shown for m in re.findall(r"dfk_live_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", text)]
    assert len(secrets) == 1
    key = ApiKey.objects.get(organization=organization)
    assert key.secret_hash == hashlib.sha256(secrets[0].encode()).hexdigest()
    assert secrets[0] not in staff.get(f"/admin/organizations/apikey/{key.pk}/change/").content.decode()
    assert api_key_authenticate(secret=secrets[0], scope="generations:read").pk == key.pk

    staff.post("/admin/organizations/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    with pytest.raises(ApiKeyInvalid):
        api_key_authenticate(secret=secrets[0], scope="generations:read")


def test_an_endpoint_on_a_private_address_is_refused_in_admin(staff, settings):
    settings.WEBHOOKS_ALLOW_LOOPBACK = False
    organization = organization_create(name="Acme")
    response = staff.post(
        "/admin/organizations/webhookendpoint/add/",
        {
            "organization": organization.pk,
            "url": "http://169.254.169.254/x",
            "events": '["generation.failed"]',
            "enabled": "on",
        },
    )
    assert response.status_code == 200 and "public addresses only" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_a_delivery_is_replayed_with_the_same_webhook_id(staff, settings):
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    organization = organization_create(name="Acme")
    webhook_endpoint_create(organization=organization, url="http://127.0.0.1:9/hook")
    with transaction.atomic():
        webhook_event_emit(
            account_id=organization.account_id, event_type="generation.failed", data={"id": "g"}
        )
    original = WebhookDelivery.objects.get()
    staff.post(
        "/admin/organizations/webhookdelivery/", {"action": "replay", "_selected_action": [original.pk]}
    )
    replay = WebhookDelivery.objects.exclude(pk=original.pk).get()
    assert (replay.message_id, replay.payload) == (original.message_id, original.payload)
    assert staff.get("/admin/organizations/webhookdelivery/").status_code == 200
