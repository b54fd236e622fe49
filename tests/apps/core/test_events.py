"""Events reach the channel layer only after the transaction that made them commits."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction

from apps.core import events

pytestmark = pytest.mark.django_db(transaction=True)


class Rollback(Exception):
    pass


def _publish_and_roll_back(group: str) -> None:
    with pytest.raises(Rollback), transaction.atomic():
        events.publish_change_on_commit(group, kind="thing", id="a", sequence=1)
        raise Rollback


def _publish_and_commit(group: str) -> None:
    with transaction.atomic():
        events.publish_change_on_commit(group, kind="thing", id="a", sequence=2)


async def test_an_event_of_a_rolled_back_transaction_is_never_published():
    layer = get_channel_layer()
    group = events.user_group(uuid.uuid4())
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    try:
        await sync_to_async(_publish_and_roll_back)(group)
        await sync_to_async(_publish_and_commit)(group)
        # A channel is first in, first out: had the rolled-back event gone out, it would come first.
        message = await asyncio.wait_for(layer.receive(channel), timeout=5)
    finally:
        await layer.group_discard(group, channel)
    assert message == {
        "type": events.EVENT_TYPE,
        "group": group,
        "payload": {"kind": "thing", "id": "a", "sequence": 2},
    }
