"""Webhooks: an organization's events, signed per Standard Webhooks and delivered by a backend worker.

- `webhook_url_check` keeps endpoints off private, loopback and link-local networks (SSRF): on save, and
  again at every delivery, which connects to the address it checked (apps/core/outbound.py), so a name
  that points somewhere else by then, or between the check and the connection, reaches nothing private.
- `webhook_event_emit` records one delivery per subscribed endpoint in the caller's transaction and sends
  each to the worker after the commit; a failure here never fails the caller's transition.
- `webhook_deliver` makes one attempt: a 2xx is delivered; a timeout, an error status or a redirect (never
  followed) is tried again after the next of `WEBHOOKS_RETRY_DELAYS_SECONDS` (about a day in all). An
  endpoint whose deliveries failed every attempt `WEBHOOKS_DISABLE_AFTER_FAILED_DELIVERIES` times in a row
  is disabled, with the reason in admin. Every delivery is its own message: a slow endpoint delays nobody.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import logging
import secrets
import uuid

import dramatiq
from django.conf import settings
from django.db import transaction
from django.db.models.functions import Coalesce
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from apps.core.errors import ValidationFailed
from apps.core.outbound import OutboundRefused, OutboundTimeout, public_addresses, send

from .models import WEBHOOK_EVENT_TYPES, DeliveryStatus, Organization, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

WEBHOOK_DELIVER_ACTOR = "webhook_deliver"  # apps/organizations/tasks.py
SECRET_ROTATION_OVERLAP = dt.timedelta(hours=24)


# --- Endpoints ------------------------------------------------------------------------------------


def _schemes() -> tuple[str, ...]:
    return ("https",) if settings.IS_PRODUCTION else ("https", "http")


def webhook_url_check(url: str) -> None:
    """ValidationFailed unless `url` is http(s) (https in production) and every address its host
    resolves to is public (loopback only where WEBHOOKS_ALLOW_LOOPBACK is on: tests, development)."""
    try:
        public_addresses(url, allow_loopback=settings.WEBHOOKS_ALLOW_LOOPBACK, schemes=_schemes())
    except OutboundRefused as exc:
        raise ValidationFailed(exc.message, field="url") from None


def webhook_events_clean(events) -> list[str]:
    if not isinstance(events, list) or not events or not set(events) <= set(WEBHOOK_EVENT_TYPES):
        raise ValidationFailed(f"Events are a list of: {', '.join(WEBHOOK_EVENT_TYPES)}.", field="events")
    return sorted(set(events))


def webhook_secret_new() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@transaction.atomic
def webhook_endpoint_create(
    *, organization: Organization, url: str, events: list[str] | None = None
) -> WebhookEndpoint:
    webhook_url_check(url)
    endpoint = WebhookEndpoint(
        organization=organization,
        url=url,
        events=webhook_events_clean(events if events is not None else list(WEBHOOK_EVENT_TYPES)),
        secret=webhook_secret_new(),
    )
    endpoint.full_clean(exclude=["organization"])
    endpoint.save(force_insert=True)
    return endpoint


@transaction.atomic
def webhook_secret_rotate(*, endpoint_id) -> WebhookEndpoint:
    """A new secret; the previous one keeps signing too for a day, so receivers can switch over."""
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = timezone.now() + SECRET_ROTATION_OVERLAP
    endpoint.secret = webhook_secret_new()
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"])
    return endpoint


def webhook_endpoint_enable(*, endpoint_id) -> None:
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(
        enabled=True, failed_deliveries_in_a_row=0, disabled_reason="", updated_at=timezone.now()
    )


# --- Events ---------------------------------------------------------------------------------------


def _send_on_commit(delivery_id, delay_seconds: float = 0) -> None:
    transaction.on_commit(
        functools.partial(_send, delivery_id=str(delivery_id), delay_seconds=delay_seconds), robust=True
    )


def _send(*, delivery_id: str, delay_seconds: float = 0) -> None:
    dramatiq.get_broker().get_actor(WEBHOOK_DELIVER_ACTOR).send_with_options(
        kwargs={"delivery_id": delivery_id}, delay=int(delay_seconds * 1000) or None
    )


def webhook_event_emit(*, account_id, event_type: str, data: dict) -> int:
    """Records `event_type` for every enabled endpoint of the organization whose account is `account_id`
    that asked for it (none for an app user) and sends them after the commit. Returns how many."""
    if event_type not in WEBHOOK_EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(organization__account_id=account_id, enabled=True)
        if event_type in endpoint.events
    ]
    if not endpoints:
        return 0
    payload = {"type": event_type, "timestamp": timezone.now().isoformat(), "data": data}
    for endpoint in endpoints:
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint, message_id=f"msg_{uuid.uuid4().hex}", event_type=event_type, payload=payload
        )
        _send_on_commit(delivery.pk)
    return len(endpoints)


def webhook_event_emit_safely(*, account_id, event_type: str, data: dict) -> None:
    """`webhook_event_emit` that never fails the caller (a job's terminal transition): logged instead."""
    try:
        with transaction.atomic():
            webhook_event_emit(account_id=account_id, event_type=event_type, data=data)
    except Exception:
        logger.exception("could not record the %s webhooks of account %s", event_type, account_id)


def webhook_deliveries_resend_lost(*, now: dt.datetime | None = None) -> int:
    """Sends again every delivery still PENDING `WEBHOOKS_RESEND_AFTER_SECONDS` past its due time (its
    first attempt after it was recorded, or `next_attempt_at`): its message was lost (a broker restart, a
    commit whose after-commit send failed). Run by the scheduler; returns how many.

    Each one's due time moves on by the same grace in the same compare-and-set, so a message that was only
    slow is sent again at most once per grace, and two sweeps never both send it. A receiver that gets it
    twice drops one by its `webhook-id`."""
    now = now or timezone.now()
    grace = dt.timedelta(seconds=settings.WEBHOOKS_RESEND_AFTER_SECONDS)
    due = Coalesce("next_attempt_at", "created_at")
    lost = (
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING)
        .alias(due=due)
        .filter(due__lt=now - grace)
        .values_list("pk", "next_attempt_at")[:1000]
    )
    resent = 0
    for delivery_id, next_attempt_at in lost:
        claimed = WebhookDelivery.objects.filter(
            pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at=next_attempt_at
        ).update(next_attempt_at=now + grace, updated_at=now)
        if claimed:
            _send(delivery_id=str(delivery_id))
            resent += 1
    if resent:
        logger.warning("re-sent %s webhook deliveries whose messages were lost", resent)
    return resent


@transaction.atomic
def webhook_delivery_replay(*, delivery_id) -> WebhookDelivery:
    """Sends a delivery again as a new one (same `webhook-id`: a receiver that has it drops it)."""
    original = WebhookDelivery.objects.get(pk=delivery_id)
    replay = WebhookDelivery.objects.create(
        endpoint_id=original.endpoint_id,
        message_id=original.message_id,
        event_type=original.event_type,
        payload=original.payload,
    )
    _send_on_commit(replay.pk)
    return replay


# --- Delivery -------------------------------------------------------------------------------------


def webhook_signature(
    endpoint: WebhookEndpoint, *, message_id: str, timestamp: dt.datetime, body: str
) -> str:
    """`v1,<sig>` with the current secret, and with the previous one too while it is still active."""
    secrets_in_use = [endpoint.secret]
    if endpoint.previous_secret and (endpoint.previous_secret_expires_at or timezone.now()) > timezone.now():
        secrets_in_use.append(endpoint.previous_secret)
    return " ".join(Webhook(secret).sign(message_id, timestamp, body) for secret in secrets_in_use)


def _attempt(endpoint: WebhookEndpoint, delivery: WebhookDelivery) -> tuple[int | None, str]:
    """(status code, error) of one POST, sent to the address that passed the SSRF check (no second DNS
    lookup a rebinding name could answer differently); never follows a redirect."""
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True)
    now = timezone.now()
    headers = {
        "content-type": "application/json",
        "user-agent": "diffuse-webhooks/1",
        "webhook-id": delivery.message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": webhook_signature(
            endpoint, message_id=delivery.message_id, timestamp=now, body=body
        ),
    }
    try:
        status, _ = send(
            endpoint.url,
            body=body.encode(),
            headers=headers,
            allow_loopback=settings.WEBHOOKS_ALLOW_LOOPBACK,
            schemes=_schemes(),
            timeout=settings.WEBHOOKS_TIMEOUT_SECONDS,
        )
    except OutboundTimeout as exc:
        return None, f"Timeout: {exc.message}"
    except OutboundRefused as exc:
        return None, exc.message[:300]
    if 200 <= status < 300:
        return status, ""
    if 300 <= status < 400:
        return status, "redirects are not followed; point the endpoint at the final URL"
    return status, f"HTTP {status}"


def webhook_deliver(*, delivery_id) -> float | None:
    """One attempt of a pending delivery. Returns the seconds until the next attempt, or None when the
    delivery is finished (delivered, failed for good, or nothing to do)."""
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return None
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        status_code, error = None, "the endpoint is disabled"
        final = True
    else:
        status_code, error = _attempt(endpoint, delivery)
        final = False
    now = timezone.now()
    delays = settings.WEBHOOKS_RETRY_DELAYS_SECONDS
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
        if delivery.status != DeliveryStatus.PENDING:
            return None
        delivery.attempts += 1
        delivery.last_status_code = status_code
        delivery.last_error = error[:300]
        fields = ["attempts", "last_status_code", "last_error", "status", "next_attempt_at", "updated_at"]
        if not error:
            delivery.status = DeliveryStatus.SUCCEEDED
            delivery.delivered_at = now
            delivery.next_attempt_at = None
            delivery.save(update_fields=[*fields, "delivered_at"])
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failed_deliveries_in_a_row=0)
            return None
        if not final and delivery.attempts <= len(delays):
            delay = float(delays[delivery.attempts - 1])
            delivery.next_attempt_at = now + dt.timedelta(seconds=delay)
            delivery.save(update_fields=fields)
            return delay
        delivery.status = DeliveryStatus.FAILED
        delivery.next_attempt_at = None
        delivery.save(update_fields=fields)
        if not final:
            _count_failed_delivery(endpoint.pk, error)
        return None


def _count_failed_delivery(endpoint_id, error: str) -> None:
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
    endpoint.failed_deliveries_in_a_row += 1
    fields = ["failed_deliveries_in_a_row", "updated_at"]
    most = settings.WEBHOOKS_DISABLE_AFTER_FAILED_DELIVERIES
    if endpoint.enabled and endpoint.failed_deliveries_in_a_row >= most:
        endpoint.enabled = False
        endpoint.disabled_reason = (
            f"Disabled on {timezone.now():%Y-%m-%d %H:%M} UTC after {most} deliveries in a row failed every "
            f"attempt (last: {error})"
        )[:300]
        fields += ["enabled", "disabled_reason"]
        logger.warning("webhook endpoint %s disabled: %s", endpoint.pk, endpoint.disabled_reason)
    endpoint.save(update_fields=fields)
