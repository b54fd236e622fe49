"""Every field of a job's row is either saved by each transition (`STATE_FIELDS`, the one list), fixed
when the row is created, or a counter with its own atomic update. A new field must be put in one of them,
so no transition can change a field that is then neither saved nor seen by subscribers (the shot plan of
a fallback route was once such a field)."""

from __future__ import annotations

from apps.characters import events as character_events
from apps.characters.models import Character
from apps.generations import events as generation_events
from apps.generations.models import Generation

GENERATION_FIXED = {
    "id",
    "created_at",
    "owner",
    "trend",
    "trend_slug",
    "prompt",
    "character_id",
    "photo_upload",
    "image_key",
    "lora_key",
    "sound_key",
    "aspect_ratio",
    "duration_seconds",
    "quality",
    "lane",
    "seed",
    "quoted_credits",
    "idempotency_key",
    "request_hash",
    "draft",  # a final's draft, set when finalizeGeneration creates it
}
# Saved by generation_changed / F(); `inputs_purged_at` (with clearing `image_key` and `photo_upload`) by the
# retention purge's update() of finished generations, which changes nothing subscribers see; `share_held`
# by fair_share.py's update() when an organization's held generation is sent (invisible to subscribers).
GENERATION_OWN_UPDATES = {"updated_at", "api_sequence", "shares", "inputs_purged_at", "share_held"}
CHARACTER_FIXED = {"id", "created_at", "owner"}
CHARACTER_OWN_UPDATES = {"updated_at", "sequence"}


def _fields(model) -> set[str]:
    return {field.name for field in model._meta.concrete_fields}


def test_every_generation_field_is_state_fixed_or_its_own_update():
    state = set(generation_events.STATE_FIELDS)
    assert not state & GENERATION_FIXED
    assert _fields(Generation) == state | GENERATION_FIXED | GENERATION_OWN_UPDATES


def test_every_soul_id_field_is_state_fixed_or_its_own_update():
    state = set(character_events.STATE_FIELDS)
    assert _fields(Character) == state | CHARACTER_FIXED | CHARACTER_OWN_UPDATES
