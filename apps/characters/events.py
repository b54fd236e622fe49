"""What subscribers hear about a Soul ID: one hint per change, on the Soul ID's group.

Every change the API can see (its own fields, its photos' verdicts, training progress) goes through
`character_changed` under the row lock: it adds one to `sequence`, saves every field a change may touch
(`STATE_FIELDS`, the one list) and publishes `{kind, id, sequence}` after the commit through
apps/core/events.py. Subscriptions read the Soul ID again through its selector.
"""

from __future__ import annotations

from apps.core import events

EVENT_KIND = "character"

STATE_FIELDS: tuple[str, ...] = (
    "name",
    "status",
    "training_step",
    "training_total",
    "training_progress",
    "training_eta_seconds",
    "failure_message",
    "lora_key",
    "lora_metadata",
    "thumbnail_key",
    "thumbnail_width",
    "thumbnail_height",
    "thumbnail_bytes",
    "trained_at",
    "last_used_at",
)


FEED = events.ChangeFeed(kind=EVENT_KIND, sequence_field="sequence", fields=STATE_FIELDS)
# `character_changed(character)`: saves a row the caller holds locked as a new change and tells its
# subscribers after the commit (FEED.group: the Soul ID's group).
character_changed = FEED.save
