"""The only publisher to the channel layer, and the one message every subscription understands.

Services call `publish_change_on_commit` so that subscribers never hear of a change that was rolled back.
A message is `{kind, id, sequence}`: which object changed and the number of that change, never its
state. A subscription (graphql_schema/live.py) joins the group first, reads the current state through
the object's selector, then reads it again for every message with a higher sequence than it last sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

EVENT_TYPE = "app.event"


def user_group(user_id: Any) -> str:
    return f"user.{user_id}"


def change_message(*, kind: str, id: Any, sequence: int) -> dict[str, Any]:
    return {"kind": kind, "id": str(id), "sequence": int(sequence)}


def publish(group: str, payload: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": EVENT_TYPE, "group": group, "payload": payload})
    except Exception:  # best-effort: the database is the truth, a lost hint is re-synced on reconnect
        logger.exception("could not publish an event to %s", group)


def save_change_on_commit(
    row: Any, *, fields: Iterable[str], sequence_field: str, group: str, kind: str
) -> None:
    """Saves `fields` of a row the caller holds locked with the next number in `sequence_field`, and tells
    `group` of that change after the commit."""
    setattr(row, sequence_field, getattr(row, sequence_field) + 1)
    row.save(update_fields=[*fields, sequence_field, "updated_at"])
    publish_change_on_commit(group, kind=kind, id=row.pk, sequence=getattr(row, sequence_field))


def publish_change_on_commit(group: str, *, kind: str, id: Any, sequence: int) -> None:
    """Tells the group's subscribers, after the commit, that object `id` of `kind` reached `sequence`."""
    payload = change_message(kind=kind, id=id, sequence=sequence)
    transaction.on_commit(lambda: publish(group, payload))
