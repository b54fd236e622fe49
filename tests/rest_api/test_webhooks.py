"""Signed webhooks: endpoint URLs checked against SSRF (on save and at delivery), Standard Webhooks
signatures that verify with the `standardwebhooks` library (two secrets while one rotates), retries of
failing receivers, disabling after repeated failure, replay, and a batch of 20 generations on the tiny
route whose every `generation.succeeded` reaches a local receiver, and deliveries whose message was lost
sent again by the scheduler's sweep."""

from __future__ import annotations

import json
import socket
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from standardwebhooks import Webhook

from apps.core.errors import ValidationFailed
from apps.generations.models import Generation, GenerationStatus
from apps.organizations.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from apps.organizations.webhooks import (
    webhook_deliver,
    webhook_deliveries_resend_lost,
    webhook_delivery_replay,
    webhook_endpoint_create,
    webhook_event_emit,
    webhook_secret_rotate,
    webhook_url_check,
)
from tests.graphql.generations.helpers import route_set_steps, wait_for
from tests.rest_api.receiver import Receiver
from tests.rest_api.test_rest_api import PROMPT

pytestmark = pytest.mark.django_db(transaction=True)


def verified(
    endpoint: WebhookEndpoint, headers: dict[str, str], body: bytes, secret: str | None = None
) -> dict:
    return Webhook(secret or endpoint.secret).verify(body, headers)


def emit(organization, event_type: str = "generation.succeeded", data: dict | None = None) -> int:
    with transaction.atomic():
        return webhook_event_emit(
            account_id=organization.account_id, event_type=event_type, data=data or {"id": "g1"}
        )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8000/hook",
        "http://[::1]/hook",
        "http://10.0.0.5/hook",
        "http://192.168.1.20/hook",
        "http://169.254.169.254/latest/meta-data",  # link-local: cloud metadata
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
        "ftp://93.184.215.14/hook",
        "http:///no-host",
    ],
)
def test_private_loopback_and_link_local_endpoints_are_refused(settings, url):
    settings.WEBHOOKS_ALLOW_LOOPBACK = False
    with pytest.raises(ValidationFailed) as refused:
        webhook_url_check(url)
    assert refused.value.field == "url"


def test_loopback_is_allowed_only_by_the_setting_and_public_addresses_always(settings):
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    webhook_url_check("http://127.0.0.1:9/hook")
    webhook_url_check("https://93.184.215.14/hook")
    with pytest.raises(ValidationFailed):
        webhook_url_check("http://10.1.2.3/hook")


def test_delivery_checks_the_url_again_and_never_calls_a_private_target(make_org, settings):
    organization, _ = make_org()
    with Receiver() as receiver:
        endpoint = webhook_endpoint_create(organization=organization, url=receiver.url)
        settings.WEBHOOKS_ALLOW_LOOPBACK = False  # the name now points somewhere it may not
        settings.WEBHOOKS_RETRY_DELAYS_SECONDS = []
        assert emit(organization) == 1
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert webhook_deliver(delivery_id=delivery.pk) is None
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.FAILED and "loopback" in delivery.last_error
        assert receiver.received == []


def test_a_receiver_failing_twice_gets_the_event_on_the_third_try(api, django_worker):
    client = api()
    with Receiver(statuses=[500, 503]) as receiver:
        endpoint = webhook_endpoint_create(organization=client.organization, url=receiver.url)
        created = client.post("/generations", json=PROMPT, headers={"Idempotency-Key": "cancel-me"}).json()
        assert client.post(f"/generations/{created['id']}/cancel").json()["status"] == "CANCELED"

        wait_for(lambda: receiver.delivered(), what="the third attempt", timeout=30)
        assert [status for _, _, status in receiver.received] == [500, 503, 204]
        ids = {headers["webhook-id"] for headers, _, _ in receiver.received}
        assert len(ids) == 1  # one message, three attempts
        headers, body = receiver.delivered()[0]
        event = verified(endpoint, headers, body)
        assert event["type"] == "generation.canceled"
        assert (event["data"]["id"], event["data"]["status"]) == (created["id"], "CANCELED")
        # The receiver answered; the worker records it just after.
        delivery = wait_for(
            lambda: WebhookDelivery.objects.filter(
                endpoint=endpoint, status=DeliveryStatus.SUCCEEDED
            ).first(),
            what="the delivery to be recorded",
        )
        assert (delivery.attempts, delivery.last_status_code) == (3, 204)


def test_redirects_are_not_followed_but_retried(make_org, settings):
    organization, _ = make_org()
    with Receiver(statuses=[302]) as receiver:
        webhook_endpoint_create(organization=organization, url=receiver.url)
        emit(organization)
        delivery = WebhookDelivery.objects.get()
        assert webhook_deliver(delivery_id=delivery.pk) == settings.WEBHOOKS_RETRY_DELAYS_SECONDS[0]
        delivery.refresh_from_db()
        assert (delivery.status, delivery.last_status_code) == (DeliveryStatus.PENDING, 302)
        assert "redirect" in delivery.last_error
        assert webhook_deliver(delivery_id=delivery.pk) is None
        assert WebhookDelivery.objects.get().status == DeliveryStatus.SUCCEEDED
        assert len(receiver.received) == 2  # the Location was never followed


def test_timeouts_are_retried(make_org, settings):
    settings.WEBHOOKS_TIMEOUT_SECONDS = 0.3
    organization, _ = make_org()
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        webhook_endpoint_create(organization=organization, url=url)
        emit(organization)
        delivery = WebhookDelivery.objects.get()
        assert webhook_deliver(delivery_id=delivery.pk) is not None
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.PENDING and "Timeout" in delivery.last_error


def test_an_endpoint_failing_every_attempt_is_disabled_with_a_notice(make_org, settings):
    settings.WEBHOOKS_RETRY_DELAYS_SECONDS = [0]
    settings.WEBHOOKS_DISABLE_AFTER_FAILED_DELIVERIES = 2
    organization, _ = make_org()
    with Receiver(statuses=[500] * 10) as receiver:
        endpoint = webhook_endpoint_create(organization=organization, url=receiver.url)
        for _ in range(2):
            emit(organization)
            delivery = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).get()
            while webhook_deliver(delivery_id=delivery.pk) is not None:
                pass
        endpoint.refresh_from_db()
        assert endpoint.enabled is False and "2 deliveries in a row failed" in endpoint.disabled_reason
        assert len(receiver.received) == 4
        assert emit(organization) == 0  # a disabled endpoint gets nothing new


def test_a_rotated_secret_signs_with_both_and_a_replay_keeps_the_webhook_id(make_org):
    organization, _ = make_org()
    with Receiver() as receiver:
        endpoint = webhook_endpoint_create(
            organization=organization, url=receiver.url, events=["character.ready"]
        )
        assert emit(organization, "generation.succeeded") == 0  # not subscribed
        old = endpoint.secret
        endpoint = webhook_secret_rotate(endpoint_id=endpoint.pk)
        emit(organization, "character.ready", {"id": "c1"})
        delivery = WebhookDelivery.objects.get()
        webhook_deliver(delivery_id=delivery.pk)
        headers, body = receiver.delivered()[0]
        assert len(headers["webhook-signature"].split(" ")) == 2
        assert verified(endpoint, headers, body, secret=old)["data"] == {"id": "c1"}
        assert verified(endpoint, headers, body)["type"] == "character.ready"

        replay = webhook_delivery_replay(delivery_id=delivery.pk)
        webhook_deliver(delivery_id=replay.pk)
        assert receiver.delivered()[1][0]["webhook-id"] == headers["webhook-id"]


@pytest.mark.services
def test_a_batch_of_20_finishes_and_each_item_is_one_signed_generation_succeeded(
    api, django_worker, gpu_lanes
):
    route_set_steps("tiny-wan", 2, tier="DRAFT")
    client = api(max_active_generations=20)
    with Receiver() as receiver:
        endpoint = webhook_endpoint_create(organization=client.organization, url=receiver.url)
        items = [{**PROMPT, "seed": n} for n in range(20)]
        response = client.post(
            "/generations/batch", json={"items": items}, headers={"Idempotency-Key": "b20"}
        )
        assert response.status_code == 200, response.text
        ids = [item["id"] for item in response.json()["data"]]
        assert all(ids) and len(set(ids)) == 20

        gpu_lanes()
        wait_for(
            lambda: Generation.objects.filter(pk__in=ids, status=GenerationStatus.SUCCEEDED).count() == 20,
            what="20 generations to succeed",
            timeout=280,
        )
        wait_for(lambda: len(receiver.delivered()) >= 20, what="20 webhooks", timeout=60)
        events = [verified(endpoint, headers, body) for headers, body in receiver.delivered()]
        assert sorted(e["data"]["id"] for e in events) == sorted(ids)
        assert {e["type"] for e in events} == {"generation.succeeded"}
        assert all(e["data"]["credits_charged"] > 0 for e in events)
        for generation_id in ids[:3]:
            got = client.get(f"/generations/{generation_id}").json()
            assert got["status"] == "SUCCEEDED" and got["video"]["url"].startswith("http")
        assert json.loads(receiver.delivered()[0][1])["data"]["status"] == "SUCCEEDED"


def test_a_hanging_endpoint_does_not_hold_up_another_organizations_delivery(
    make_org, settings, django_worker
):
    import socket

    settings.WEBHOOKS_TIMEOUT_SECONDS = 20
    slow_org, _ = make_org("Slow Co")
    fast_org, _ = make_org("Fast Co")
    with socket.socket() as silent, Receiver() as receiver:  # `silent` accepts and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.settimeout(30)
        slow = webhook_endpoint_create(
            organization=slow_org, url=f"http://127.0.0.1:{silent.getsockname()[1]}/"
        )
        webhook_endpoint_create(organization=fast_org, url=receiver.url)
        emit(slow_org)
        connection, _ = silent.accept()  # the slow endpoint is called: a worker thread now waits on it
        emit(fast_org)
        wait_for(lambda: receiver.delivered(), what="the other delivery", timeout=15)
        # The first attempt at the slow endpoint is still waiting for its answer.
        assert WebhookDelivery.objects.get(endpoint=slow).attempts == 0
        connection.close()


def test_a_delivery_whose_message_was_lost_is_sent_again_by_the_sweep(make_org, settings, django_worker):
    organization, _ = make_org()
    with Receiver() as receiver:
        endpoint = webhook_endpoint_create(organization=organization, url=receiver.url)
        # Recorded, but its message never reached the broker (or the broker lost it in a restart).
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint,
            message_id="msg_lost",
            event_type="generation.succeeded",
            payload={"type": "generation.succeeded", "timestamp": "2026-12-01T00:00:00+00:00", "data": {}},
        )
        assert webhook_deliveries_resend_lost() == 0  # not yet overdue: its message may only be slow
        assert receiver.received == []

        overdue = timezone.now() - timedelta(seconds=settings.WEBHOOKS_RESEND_AFTER_SECONDS + 1)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(created_at=overdue)
        assert webhook_deliveries_resend_lost() == 1
        assert webhook_deliveries_resend_lost() == 0  # sent again once per grace, not at every sweep

        wait_for(lambda: receiver.delivered(), what="the re-sent delivery")
        headers, body = receiver.delivered()[0]
        assert verified(endpoint, headers, body)["type"] == "generation.succeeded"
        assert headers["webhook-id"] == "msg_lost"
        delivery = wait_for(
            lambda: WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SUCCEEDED).first(),
            what="the delivery to be recorded",
        )
        assert delivery.attempts == 1 and len(receiver.received) == 1
    # A delivered one is left alone, however late.
    assert webhook_deliveries_resend_lost(now=timezone.now() + timedelta(days=2)) == 0


def test_a_delivery_resolves_the_host_once_and_connects_to_that_address(make_org, monkeypatch):
    """No second DNS lookup between the SSRF check and the connection (a rebinding name gets nowhere)."""
    organization, _ = make_org()
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []
    with Receiver() as receiver:
        port = receiver.server.server_address[1]

        def resolver(host, *args, **kwargs):
            if host == "hooks.example":
                lookups.append(host)
                return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))]
            return real_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", resolver)
        endpoint = webhook_endpoint_create(
            organization=organization, url=f"http://hooks.example:{port}/hooks"
        )
        assert lookups == ["hooks.example"]  # the check on save
        emit(organization)
        assert webhook_deliver(delivery_id=WebhookDelivery.objects.get().pk) is None
        assert lookups == ["hooks.example"] * 2  # one more for the delivery's check, none to connect
        headers, body = receiver.delivered()[0]
        assert headers["host"] == f"hooks.example:{port}"
        assert verified(endpoint, headers, body)["type"] == "generation.succeeded"
