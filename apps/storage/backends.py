"""Object storage: a local folder (embedded) or S3 (services). Placeholder for the local check only."""

from __future__ import annotations

from django.conf import settings


class LocalStorage:
    def check(self) -> None:
        settings.MEDIA_ROOT.mkdir(parents=True, exist_ok=True)


def get_storage() -> LocalStorage:
    return LocalStorage()
