"""Who sees what: app versions, locales and platforms, parsed strictly and compared one way everywhere."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError

_VERSION = re.compile(r"^\d{1,5}(\.\d{1,5}){0,3}$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8}){0,2}$")

Version = tuple[int, int, int, int]


def parse_app_version(value: str) -> Version:
    """`2.3.1` -> (2, 3, 1, 0). Raises ValueError for anything but 1 to 4 dot-separated numbers."""
    value = (value or "").strip()
    if not _VERSION.match(value):
        raise ValueError(f"not an app version: {value!r}")
    parts = [int(part) for part in value.split(".")]
    return (*parts, *([0] * (4 - len(parts))))  # type: ignore[return-value]


def format_version(version: Version) -> str:
    return ".".join(str(part) for part in version)


def normalize_locale(value: str | None, default: str = "en") -> str:
    """`en_us` -> `en-US`. Raises ValueError for text that is not a BCP 47-like tag."""
    value = (value or "").strip()
    if not value:
        return default
    if not _LOCALE.match(value):
        raise ValueError(f"not a locale: {value!r}")
    parts = value.replace("_", "-").split("-")
    head, rest = parts[0].lower(), parts[1:]
    return "-".join([head, *[p.upper() if len(p) == 2 else p.title() for p in rest]])


def locale_chain(locale: str) -> list[str]:
    """`pt-BR` -> [`pt-BR`, `pt`]: the most specific first."""
    parts = locale.split("-")
    return ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]


def localized(default: str, translations: dict[str, str] | None, locale: str | None) -> str:
    """The text for `locale` (exact, then its language; keys compared without case, the last non-empty
    text of a key wins), else the default text (also without a locale). Read for every card of a home
    screen: the locale's chain is made once per locale, and the few translations are scanned rather than
    copied into a dict."""
    if not translations or not locale:
        return default
    for candidate in _lowered_chain(locale):
        found = None
        for key, text in translations.items():
            if text and key.lower() == candidate:
                found = text
        if found is not None:
            return found
    return default


@functools.lru_cache(maxsize=256)
def _lowered_chain(locale: str) -> tuple[str, ...]:
    return tuple(candidate.lower() for candidate in locale_chain(locale))


@dataclass(frozen=True)
class Audience:
    """The caller of `homeScreen`: what the shared part of the screen is cached by."""

    platform: str
    version: Version
    locale: str

    @property
    def cache_key(self) -> str:
        return f"{self.platform}:{format_version(self.version)}:{self.locale}"


def targets(
    audience: Audience, *, platforms: Iterable[str], min_app_version: str, locales: Iterable[str]
) -> bool:
    """Empty lists and an empty minimum version mean "everyone"."""
    platforms = list(platforms or [])
    if platforms and audience.platform not in platforms:
        return False
    if min_app_version and audience.version < parse_app_version(min_app_version):
        return False
    wanted = {locale.lower() for locale in (locales or [])}
    return not wanted or any(candidate.lower() in wanted for candidate in locale_chain(audience.locale))


# --- Model field validators -------------------------------------------------------------------


def validate_app_version(value: str) -> None:
    if value:
        try:
            parse_app_version(value)
        except ValueError:
            raise ValidationError("Write the version as numbers, like 2.3 or 2.3.1.") from None


def validate_locales(value: list) -> None:
    if not isinstance(value, list):
        raise ValidationError('A list of locales, like ["en", "pt-BR"].')
    for item in value:
        try:
            normalize_locale(item)
        except (ValueError, AttributeError):
            raise ValidationError(f"{item!r} is not a locale like en or pt-BR.") from None


def validate_translations(value: dict) -> None:
    if not isinstance(value, dict):
        raise ValidationError('An object of locale to text, like {"es": "Tendencias"}.')
    for key, text in value.items():
        try:
            normalize_locale(key)
        except ValueError:
            raise ValidationError(f"{key!r} is not a locale like en or pt-BR.") from None
        if not isinstance(text, str):
            raise ValidationError(f"The text for {key!r} must be a string.")
