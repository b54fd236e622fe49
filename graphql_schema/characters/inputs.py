from __future__ import annotations

import strawberry


@strawberry.input
class CreateCharacterInput:
    name: str
    consent: bool = strawberry.field(
        description="The user agreed to the biometric consent text shown (CONSENT_REQUIRED otherwise)."
    )
