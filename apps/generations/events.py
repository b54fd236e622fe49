"""What subscribers hear about a generation: one message per change, on the generation's group.

Every change of a generation goes through `generation_changed`, which adds one to `api_sequence`, saves
the named fields and publishes (after the commit, through apps/core/events.py) the generation's state
with that sequence. A subscriber reads the database once (the snapshot), then applies the states of
messages with a higher sequence: `generation_apply_state` turns a message back into field values.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.db import models

from apps.core import events

from .models import Generation

EVENT_KIND = "generation"

# The fields that change after a generation is created (what a message carries).
STATE_FIELDS: tuple[str, ...] = (
    "status",
    "stage",
    "progress",
    "attempt",
    "route",
    "route_name",
    "width",
    "height",
    "num_frames",
    "queued_at",
    "started_at",
    "finished_at",
    "failure_code",
    "failure_message",
    "failure_retryable",
    "credits_charged",
    "seed_used",
    "video_key",
    "video_bytes",
    "video_width",
    "video_height",
    "video_fps",
    "video_frames",
    "video_duration_seconds",
    "poster_key",
    "poster_bytes",
    "poster_width",
    "poster_height",
    "shares",
    "deleted_at",
)


def generation_group(generation_id: Any) -> str:
    return f"generation.{generation_id}"


def _json(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def generation_state(generation: Generation) -> dict[str, Any]:
    state = {}
    for name in STATE_FIELDS:
        field = Generation._meta.get_field(name)
        state[field.attname] = _json(getattr(generation, field.attname))
    return state


def generation_apply_state(generation: Generation, state: dict[str, Any]) -> None:
    """Sets the fields of a message's state on `generation` (unknown keys are ignored)."""
    for name in STATE_FIELDS:
        field = Generation._meta.get_field(name)
        if field.attname not in state:
            continue
        value = state[field.attname]
        if value is not None and isinstance(field, models.DateTimeField):
            value = dt.datetime.fromisoformat(value)
        elif value is not None and field.attname == "route_id":
            value = uuid.UUID(value)
        if field.attname == "route_id" and value != generation.route_id:
            generation._state.fields_cache.pop("route", None)  # the new route is read when needed
        setattr(generation, field.attname, value)


def generation_changed(generation: Generation, fields: list[str] | tuple[str, ...]) -> None:
    """Saves `fields`, numbers the change and publishes it after the commit. Call with the row locked."""
    generation.api_sequence += 1
    update = {Generation._meta.get_field(name).name for name in fields} | {"api_sequence", "updated_at"}
    generation.save(update_fields=sorted(update))
    events.publish_on_commit(
        generation_group(generation.pk),
        {
            "kind": EVENT_KIND,
            "id": str(generation.pk),
            "sequence": generation.api_sequence,
            "state": generation_state(generation),
        },
    )
