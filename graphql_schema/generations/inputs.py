from __future__ import annotations

import strawberry

from ..enums import AspectRatio, QualityTier, SpeedLane


@strawberry.input(description="What to make: a trend or a prompt (or both), who is in it, and how.")
class GenerationInput:
    trend_slug: str | None = strawberry.field(default=None, description="The trend to use, or none.")
    prompt: str | None = strawberry.field(
        default=None, description='Free text, alone or on top of a trend ("make it feel dramatic").'
    )
    character_id: strawberry.ID | None = strawberry.field(default=None, description="A ready Soul ID.")
    photo_upload_id: strawberry.ID | None = strawberry.field(
        default=None, description="A selfie: the uploadId of a completed upload."
    )
    aspect_ratio: AspectRatio | None = strawberry.field(default=None, description="Default: the trend's.")
    duration_seconds: int | None = strawberry.field(default=None, description="Default: the trend's.")
    quality: QualityTier | None = strawberry.field(default=None, description="Default: the trend's.")
    speed: SpeedLane | None = strawberry.field(default=None, description="Default: INSTANT.")
    seed: int | None = strawberry.field(default=None, description="0 or more; default: random.")
    with_sound: bool | None = strawberry.field(
        default=True,
        description="The trend's sound in the video (AAC; null: true). False, or a trend without a sound: "
        "a silent video.",
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description=(
            "Required by createGeneration (ignored by generationQuote): a new key (a UUID) per video the "
            "user asks for, sent again on every retry of that request. The same key with the same input "
            "returns the same generation and charges once; with a different input it is "
            "IDEMPOTENCY_KEY_REUSED. Keys are kept for at least 24 hours."
        ),
    )
