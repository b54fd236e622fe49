"""The biometric consent text the app shows before a Soul ID is made, by version.

A consent record stores the version and the SHA-256 of its text, so what the user agreed to can be
proved later. Never edit a published version: add a new one and point CHARACTERS_CONSENT_VERSION at it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ConsentText:
    version: str
    purpose: str
    retention_term: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


SIGNATURE_METHOD = "in-app consent checkbox"

TEXTS: dict[str, ConsentText] = {
    "2026-11-01": ConsentText(
        version="2026-11-01",
        purpose="Create a Soul ID: check your selfies and train a model of your face to put you in videos.",
        retention_term="Until you delete the Soul ID or your account, or 1 year without use, whichever is "
        "first (never longer than 3 years).",
        text=(
            "To make your Soul ID we collect the selfies you upload and derive biometric data from them: "
            "face crops, face measurements and a face model trained on them. We use them only to put you "
            "in the videos you ask for. We do not sell or share them. We delete all of it when you delete "
            "the Soul ID or your account, or after 1 year without use, whichever comes first, and never "
            "keep it longer than 3 years. You can withdraw this consent at any time by deleting the Soul ID."
        ),
    ),
}


def consent_text(version: str) -> ConsentText:
    return TEXTS[version]
