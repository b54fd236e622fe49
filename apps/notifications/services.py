"""Push notifications: record one message per device of a user, deliver each on the push queue.

Other apps call the two `push_notify_*_finished` helpers (or `push_notify_user` for a new kind) inside the
transaction that makes the state change; the messages are enqueued when it commits. Delivery is
at-least-once and idempotent: a message already SENT (or FAILED or DEAD) is never sent again, and a
message claimed by a worker that died is taken over after `PUSH_SENDING_LEASE_SECONDS`.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import Device, User

from .messages import render, validate_params
from .models import FINAL_STATUSES, PushKind, PushMessage, PushStatus
from .senders import Result, SendOutcome, get_sender

logger = logging.getLogger(__name__)

# The actor's Dramatiq retry budget; PUSH_MAX_ATTEMPTS is capped to fit in it.
MAX_ATTEMPTS_CEILING = 50
# APNs refuses an apns-collapse-id over 64 bytes; FCM's collapse keys are short too.
_COLLAPSE_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Data carries ids and the app's deep link only: short tokens without spaces, `@` or web URLs.
_DATA_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_DATA_VALUE = re.compile(r"^[A-Za-z0-9._:/?=&%-]{1,200}$")
_RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type", "collapse_key", "kind", "push_id"})


def _deep_link(path: str) -> str:
    return f"{settings.PUSH_DEEP_LINK_SCHEME}://{path}"


def _validate_collapse_key(collapse_key: str) -> None:
    if not isinstance(collapse_key, str) or not _COLLAPSE_KEY.match(collapse_key):
        raise ValueError(f"collapse_key {collapse_key!r}: 1 to 64 characters of A-Z a-z 0-9 . _ : -")


def _validate_data(data: dict[str, str]) -> None:
    scheme = f"{settings.PUSH_DEEP_LINK_SCHEME}://"
    for key, value in data.items():
        if not isinstance(key, str) or not _DATA_KEY.match(key) or key in _RESERVED_DATA_KEYS:
            raise ValueError(f"push data key {key!r} is reserved or not snake_case")
        if key.startswith(("google", "gcm")):
            raise ValueError(f"push data key {key!r}: FCM reserves the google and gcm prefixes")
        if not isinstance(value, str) or not _DATA_VALUE.match(value):
            raise ValueError(f"push data {key}={value!r}: ids and deep links only (a short string)")
        if "://" in value and not value.startswith(scheme):
            raise ValueError(f"push data {key}={value!r}: no URLs but the app's own {scheme} deep links")


@transaction.atomic
def push_notify_user(
    *, user: User, kind: str, params: dict[str, Any], collapse_key: str, data: dict[str, str]
) -> list[PushMessage]:
    """Records a push of `kind` to each of the user's devices, in each device's language, and enqueues
    their delivery when the transaction commits. Returns the messages (none when the user has no device).

    `params` fill the kind's text (see apps/notifications/messages.py); `collapse_key` replaces an older
    push with the same key on the phone (one per generation or Soul ID); `data` is the data payload: ids
    and a deep link only, string values. Raises ValueError for a kind, params, key or data that do not fit.
    """
    validate_params(kind, params)
    _validate_collapse_key(collapse_key)
    _validate_data(data)
    messages: list[PushMessage] = []
    for device in Device.objects.filter(user=user).order_by("created_at"):
        rendered = render(kind, device.locale, params)
        push_id = uuid.uuid4()
        push = PushMessage(
            id=push_id,
            user=user,
            device=device,
            platform=device.platform,
            locale=rendered.locale,
            kind=kind,
            title=rendered.title,
            body=rendered.body,
            data={**data, "kind": kind, "push_id": str(push_id)},
            collapse_key=collapse_key,
        )
        push.full_clean()
        messages.append(push)
    PushMessage.objects.bulk_create(messages)
    for push in messages:
        transaction.on_commit(functools.partial(_enqueue, push_id=str(push.id)))
    return messages


def _enqueue(*, push_id: str) -> None:
    from .tasks import push_deliver_task

    push_deliver_task.send(push_id=push_id)


def push_notify_generation_finished(
    *,
    user: User,
    generation_id: uuid.UUID | str,
    succeeded: bool,
    trend_title: str | dict[str, str],
    reason: str | None = None,
) -> list[PushMessage]:
    """The push for a generation that reached SUCCEEDED (`succeeded=True`) or FAILED (`reason`: a code of
    messages.REASON_CODES, or None for the generic one). Collapse key `gen-<id>`; data: the generation id
    and `diffuse://generations/<id>`."""
    if succeeded and reason is not None:
        raise ValueError("a succeeded generation has no failure reason")
    kind = PushKind.GENERATION_SUCCEEDED if succeeded else PushKind.GENERATION_FAILED
    params: dict[str, Any] = {"trend_title": trend_title}
    if not succeeded:
        params["reason"] = reason
    return push_notify_user(
        user=user,
        kind=kind,
        params=params,
        collapse_key=f"gen-{generation_id}",
        data={"generation_id": str(generation_id), "deep_link": _deep_link(f"generations/{generation_id}")},
    )


def push_notify_character_finished(
    *,
    user: User,
    character_id: uuid.UUID | str,
    ready: bool,
    character_name: str,
    reason: str | None = None,
) -> list[PushMessage]:
    """The push for a Soul ID whose training reached READY (`ready=True`) or FAILED. Collapse key
    `char-<id>`; data: the character id and `diffuse://characters/<id>`."""
    if ready and reason is not None:
        raise ValueError("a ready Soul ID has no failure reason")
    kind = PushKind.CHARACTER_READY if ready else PushKind.CHARACTER_FAILED
    params: dict[str, Any] = {"character_name": character_name}
    if not ready:
        params["reason"] = reason
    return push_notify_user(
        user=user,
        kind=kind,
        params=params,
        collapse_key=f"char-{character_id}",
        data={"character_id": str(character_id), "deep_link": _deep_link(f"characters/{character_id}")},
    )


# --- Delivery (the push actor) -----------------------------------------------------------------


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
