"""Push notifications: record one message per device of a user, deliver each on the push queue.

Other apps call the two `push_notify_*_finished` helpers (or `push_notify_user` for a new kind) inside the
transaction that makes the state change; the messages are enqueued when it commits. Delivery is
at-least-once and idempotent: a message already SENT (or FAILED or DEAD) is never sent again, and a
message claimed by a worker that died is taken over after `PUSH_SENDING_LEASE_SECONDS`.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction

from apps.accounts.models import Device, User

from .messages import render, validate_params
from .models import PushKind, PushMessage
from .tasks import push_deliver_task

logger = logging.getLogger(__name__)

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
