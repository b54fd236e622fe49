"""The only publisher to the channel layer, and the one message every subscription understands.

Services call `publish_change_on_commit` so that subscribers never hear of a change that was rolled back.
A message is `{kind, id, sequence}`: which object changed and the number of that change, never its
state. A subscription (graphql_schema/live.py) joins the group first, reads the current state through
the object's selector, then reads it again for every message with a higher sequence than it last sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ChangeFeed:
    """The changes of one kind of row that subscriptions follow: each change is saved under the row lock
    with the next number in `sequence_field` and told, after the commit, to the row's own group."""

    kind: str
    sequence_field: str
    fields: tuple[str, ...]

    def group(self, row_id: Any) -> str:
        return f"{self.kind}.{row_id}"

    def sequence(self, row: Any) -> int:
        return getattr(row, self.sequence_field)

    def save(self, row: Any) -> None:
        """Saves `fields` of a row the caller holds locked as a new change and tells its group."""
        setattr(row, self.sequence_field, self.sequence(row) + 1)
        row.save(update_fields=[*self.fields, self.sequence_field, "updated_at"])
        publish_change_on_commit(self.group(row.pk), kind=self.kind, id=row.pk, sequence=self.sequence(row))


def publish_change_on_commit(group: str, *, kind: str, id: Any, sequence: int) -> None:
    """Tells the group's subscribers, after the commit, that object `id` of `kind` reached `sequence`."""
    payload = change_message(kind=kind, id=id, sequence=sequence)
    transaction.on_commit(lambda: publish(group, payload))
