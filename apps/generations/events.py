"""What subscribers hear about a generation: one hint per change, on the generation's group.

Every change of a generation goes through `generation_changed`, which adds one to `api_sequence`, saves
every field a transition may change (`STATE_FIELDS`, the one list) and publishes, after the commit,
`{kind, id, sequence}` through apps/core/events.py. A subscriber reads the generation through its selector
when a hint is newer than what it last sent; no state travels in the message.
"""

from __future__ import annotations

from apps.core import events

EVENT_KIND = "generation"

# Every field that changes after a generation is created: each transition saves all of them (the row is
# locked, so the in-memory values are the committed ones plus this transition's changes).
STATE_FIELDS: tuple[str, ...] = (
    "status",
    "stage",
    "progress",
    "attempt",
    "route_attempts",
    "route",
    "route_name",
    "plan",
    "width",
    "height",
    "num_frames",
    "fps",  # a fallback route renders the tier at its own frame rate
    "queued_at",
    "started_at",
    "finished_at",
    "last_event_at",
    "last_worker_sequence",
    "job_message_id",
    "cancel_requested_at",
    "failure_code",
    "failure_message",
    "failure_retryable",
    "credits_charged",
    "seed_used",
    "timings",
    "worker_outcome",
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
    "deleted_at",
)


FEED = events.ChangeFeed(kind=EVENT_KIND, sequence_field="api_sequence", fields=STATE_FIELDS)
# `generation_changed(generation)`: saves a row the caller holds locked as a new change and tells its
# subscribers after the commit (FEED.group: the generation's group).
generation_changed = FEED.save
