"""Push delivery: one attempt of one message, what the push actor (tasks.py) runs.

Kept apart from services.py, which records messages and enqueues the actor: services -> tasks -> delivery,
with no cycle between them.
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import Device

from .models import FINAL_STATUSES, PushMessage, PushStatus
from .senders import Result, SendOutcome, get_sender

logger = logging.getLogger(__name__)

# The actor's Dramatiq retry budget; PUSH_MAX_ATTEMPTS is capped to fit in it.
MAX_ATTEMPTS_CEILING = 50


def push_max_attempts() -> int:
    return max(1, min(settings.PUSH_MAX_ATTEMPTS, MAX_ATTEMPTS_CEILING))


def _backoff_ms(attempt: int, retry_after_seconds: float | None) -> int:
    """Exponential backoff with equal jitter after attempt `attempt` (1-based); never under Retry-After."""
    ceiling = min(settings.PUSH_RETRY_MAX_BACKOFF_MS, settings.PUSH_RETRY_MIN_BACKOFF_MS * 2 ** (attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after_seconds is not None:
        delay = max(delay, retry_after_seconds * 1000)
    return int(delay)


def push_message_deliver(*, push_id: str) -> int | None:
    """One delivery attempt of a push message. Returns the milliseconds to wait before the next attempt
    (the caller schedules it), or None when there is nothing more to do."""
    now = timezone.now()
    with transaction.atomic():
        push = (
            PushMessage.objects.select_for_update(of=("self",))
            .select_related("device")
            .filter(pk=push_id)
            .first()
        )
        if push is None or push.status in FINAL_STATUSES:
            return None  # the user is gone, or this is a redelivery of a finished message
        if push.status == PushStatus.SENDING and push.claimed_at is not None:
            lease_end = push.claimed_at + timedelta(seconds=settings.PUSH_SENDING_LEASE_SECONDS)
            if lease_end > now:  # another worker is on it: look again when its claim runs out
                return int((lease_end - now).total_seconds() * 1000) + 1
        if push.attempts >= push_max_attempts():
            _finish(push, PushStatus.FAILED, f"gave up after {push.attempts} attempts; last: {push.error}")
            return None
        device = push.device
        if device is None or device.user_id != push.user_id:
            # Signed out, unregistered, or the phone now belongs to another account: never send it there.
            _finish(push, PushStatus.DEAD, "the device was removed or moved to another account")
            return None
        token = device.token
        push.status = PushStatus.SENDING
        push.attempts += 1
        push.claimed_at = now
        push.next_attempt_at = None
        push.save(update_fields=["status", "attempts", "claimed_at", "next_attempt_at", "updated_at"])
    attempt = push.attempts

    try:
        outcome = get_sender().send(push=push, token=token)
    except Exception as exc:  # a bug or a broken configuration: keep the message, retry later
        logger.exception("push %s: the sender raised", push.id)
        outcome = SendOutcome(Result.RETRY, error=f"{type(exc).__name__}: {exc}"[:500])
    return _record(push=push, attempt=attempt, token=token, outcome=outcome)


def _finish(push: PushMessage, status: str, error: str) -> None:
    push.status = status
    push.error = error[:2000]
    push.save(update_fields=["status", "error", "updated_at"])


def _record(*, push: PushMessage, attempt: int, token: str, outcome: SendOutcome) -> int | None:
    now = timezone.now()
    # Only the claim that made this attempt may record it (a worker that outlived its lease may not).
    mine = PushMessage.objects.filter(pk=push.pk, status=PushStatus.SENDING, attempts=attempt)
    changes: dict[str, Any] = {"error": outcome.error, "updated_at": now}
    delay_ms: int | None = None
    if outcome.result == Result.SENT:
        changes.update(status=PushStatus.SENT, provider_message_id=outcome.provider_message_id, sent_at=now)
    elif outcome.result == Result.DEAD:
        changes.update(status=PushStatus.DEAD)
    elif outcome.result == Result.FAILED:
        changes.update(status=PushStatus.FAILED)
    elif attempt >= push_max_attempts():
        changes.update(
            status=PushStatus.FAILED, error=f"gave up after {attempt} attempts; last: {outcome.error}"
        )
        logger.warning("push %s failed after %d attempts: %s", push.id, attempt, outcome.error)
    else:
        delay_ms = _backoff_ms(attempt, outcome.retry_after_seconds)
        changes.update(status=PushStatus.QUEUED, next_attempt_at=now + timedelta(milliseconds=delay_ms))
    with transaction.atomic():
        if not mine.update(**changes):
            logger.warning("push %s: attempt %d outlived its claim; its outcome is dropped", push.id, attempt)
            return None
        if outcome.result == Result.DEAD:
            # The token FCM refused, not a newer one the app may have registered on the same row since.
            deleted, _ = Device.objects.filter(pk=push.device_id, token=token).delete()
            logger.info("push %s: dead token, device %s deleted (%d rows)", push.id, push.device_id, deleted)
    return delay_ms
