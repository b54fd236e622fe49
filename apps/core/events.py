"""The only publisher to the channel layer.

Services call `publish_on_commit` so that subscribers never hear of a change that was rolled back.
Subscriptions (graphql_schema) listen to the group, then read the database for the current state; a
message is only a hint that something changed, and it carries a `sequence` so stale ones can be dropped.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

EVENT_TYPE = "app.event"


def user_group(user_id: Any) -> str:
    return f"user.{user_id}"


def publish(group: str, payload: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": EVENT_TYPE, "group": group, "payload": payload})
    except Exception:  # best-effort: the database is the truth, a lost hint is re-synced on reconnect
        logger.exception("could not publish an event to %s", group)


def publish_on_commit(group: str, payload: dict[str, Any]) -> None:
    transaction.on_commit(lambda: publish(group, payload))
