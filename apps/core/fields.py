"""Model fields shared by the apps."""

from __future__ import annotations

import re

import orjson
from django.db import models

# orjson reads an integer beyond 64 bits as a float (no error), json.loads as an int: a text with 19 or more
# digits in a row goes Django's way (a string of digits too; the answer is the same, only slower).
_LONG_DIGITS = re.compile(r"\d{19}")


class JSONField(models.JSONField):
    """Django's JSONField, read with orjson: the home screen's build reads ~7 of these per trend (1,400 per
    screen of 200 trends), and `json.loads` was a fifth of it. What orjson refuses (NaN, Infinity, lone
    surrogates) or reads differently (integers beyond 64 bits) and a custom decoder go Django's way, so
    every value reads as before. The migrations see Django's own field (`deconstruct`), so switching a
    field to this one changes nothing in the database."""

    def from_db_value(self, value, expression, connection):
        if isinstance(value, str) and self.decoder is None and not _LONG_DIGITS.search(value):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
        return super().from_db_value(value, expression, connection)

    def deconstruct(self):
        name, _, args, kwargs = super().deconstruct()
        return name, "django.db.models.JSONField", args, kwargs
