"""Prompt text in the one form that term lists are matched in.

People write around a blocklist: "NÚDE", "n u d e", "n.u.d.e", "nud3", "ｎｕｄｅ", "nudе" with a Cyrillic
"е". Each of these comes out as the same word here: look-alike letters become the Latin letter they
imitate (Unicode's confusables data, through `confusable_homoglyphs`), everything else is transliterated
to ASCII (`anyascii`: accents, full-width forms, other scripts), case is folded, digits and symbols that
stand for letters are read as those letters, and a run of single letters split by spaces or dots is
joined back into one word. Terms go through the same function, so a term written with an accent still
matches.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from anyascii import anyascii
from confusable_homoglyphs import confusables

# Leetspeak: what each digit or symbol stands for inside a word. "1" and "|" are an "i" or an "l":
# `prompt_forms` gives both readings.
LEET = str.maketrans(
    {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a", "$": "s"}
)
LEET_ONE = ("i", "l")

_WORD = re.compile(r"[a-z0-9@$|]+")
# Two or more one-character words in a row ("n u d e", "n.u.d.e", "n-u-d-e") are one spelled-out word.
_SPELLED = re.compile(r"\b(?:[a-z0-9@$|][\s._\-*]+){2,}[a-z0-9@$|]\b")


@functools.cache
def _latin_lookalikes() -> dict[str, str]:
    """Each non-ASCII character that looks like an ASCII letter or digit, mapped to that character."""
    table: dict[str, str] = {}
    for char, entries in confusables.confusables_data.items():
        if len(char) != 1 or char.isascii():
            continue
        for entry in entries:
            glyph = entry["c"]
            if len(glyph) == 1 and glyph.isascii() and glyph.isalnum():
                table[char] = glyph
                break
    return table


def _ascii(text: str) -> str:
    lookalikes = _latin_lookalikes()
    text = unicodedata.normalize("NFKC", text)
    text = "".join(lookalikes.get(char, char) for char in text)
    return anyascii(text).casefold()


def _join(run: str) -> str:
    return re.sub(r"[\s._\-*]+", "", run)


def fold(text: str) -> str:
    """Look-alikes, accents, width and case folded: ASCII lower case, words split by single spaces, a
    spelled-out run of single letters joined into one word."""
    text = _SPELLED.sub(lambda m: _join(m.group(0)), _ascii(text))
    return " ".join(_WORD.findall(text))


def _leet_readings(text: str) -> set[str]:
    return {text.translate(LEET).replace("1", one).replace("|", one) for one in LEET_ONE}


def prompt_forms(text: str) -> set[str]:
    """The readings of a text to match terms against: folded, with leetspeak read as letters (both
    readings of "1"), each as words split by single spaces."""
    return _leet_readings(fold(text))


def spelled_runs(text: str) -> set[str]:
    """The spelled-out runs of a text ("a n u d e" -> "anude"), joined and read like `prompt_forms`:
    spelling a word out is a way around a list, so a term anywhere inside a run counts."""
    runs = {_join(match.group(0)) for match in _SPELLED.finditer(_ascii(text))}
    return {reading for run in runs for reading in _leet_readings(run)}


def term_form(term: str) -> str:
    """A listed term in the form it is matched in (a phrase keeps its words, single-spaced)."""
    return fold(term).translate(LEET)
