"""`localized`: the text a locale reads, the same as the plain reading of its rule whatever the keys' case."""

from __future__ import annotations

import pytest

from apps.trends.targeting import locale_chain, localized


def _by_the_rule(default: str, translations: dict | None, locale: str) -> str:
    """The rule as first written: keys lowered into a dict (the last non-empty text of a key wins), then the
    locale's chain, most specific first."""
    if not translations:
        return default
    lowered = {key.lower(): text for key, text in translations.items() if text}
    for candidate in locale_chain(locale):
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    return default


TRANSLATIONS = [
    None,
    {},
    {"es": "Baile", "pt": "Dança", "fr": "Danse"},
    {"pt-BR": "Dança (BR)", "pt": "Dança"},
    {"PT-br": "upper first", "pt-BR": "", "pt-br": "last wins"},
    {"pt-br": "first", "PT-BR": "second"},
    {"en": "", "EN": "English"},
    {"zh-Hant-TW": "繁體", "zh": "中文"},
]
LOCALES = ["en", "es", "pt", "pt-BR", "fr-CA", "zh-Hant-TW", "zh-Hans", "de"]


@pytest.mark.parametrize("translations", TRANSLATIONS)
@pytest.mark.parametrize("locale", LOCALES)
def test_localized_reads_the_rule(translations, locale):
    assert localized("Default", translations, locale) == _by_the_rule("Default", translations, locale)


def test_localized_prefers_the_exact_locale_then_its_language():
    translations = {"pt-BR": "Dança (BR)", "pt": "Dança"}
    assert localized("Dance", translations, "pt-BR") == "Dança (BR)"
    assert localized("Dance", translations, "pt-PT") == "Dança"
    assert localized("Dance", translations, "en") == "Dance"
