"""apps.core.fields.JSONField reads every stored value as Django's own JSONField does, with orjson where
it can; the migrations see Django's field."""

from __future__ import annotations

import json

import pytest
from django.db import models

from apps.accounts.models import AccountErasure
from apps.core.fields import JSONField
from apps.trends.models import Trend
from tests.apps.trends.helpers import make_category, make_trend

TEXTS = [
    "[]",
    "{}",
    '{"es": "Baile", "pt-BR": "Dan\\u00e7a"}',
    '["ios", "android"]',
    "3.14159",
    "1e308",
    "-0.0",
    '"\\ud83d\\ude00 emoji by escapes"',
    '{"a": {"b": [1, 2, {"c": null}]}, "a": "last wins"}',
    # orjson refuses these; Django's json.loads reads them, and so must the field
    "NaN",
    "[Infinity, -Infinity]",
    "[1e400, -1e400]",
    str(2**70),
    str(-(2**64)),
    "[18446744073709551615, 0.1]",
    '"\\ud800 a lone surrogate"',
    # not JSON at all (a KeyTransform's text on some backends): both give the text back
    "plain text",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_reads_what_djangos_field_reads(text):
    ours, django = JSONField(), models.JSONField()
    expected = django.from_db_value(text, None, None)
    got = ours.from_db_value(text, None, None)
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert type(got) is type(expected)


def test_none_and_a_custom_decoder_go_djangos_way():
    class Upper(json.JSONDecoder):
        def decode(self, s, *args, **kwargs):
            return super().decode(s.upper(), *args, **kwargs)

    assert JSONField().from_db_value(None, None, None) is None
    assert JSONField(decoder=Upper).from_db_value('["a"]', None, None) == ["A"]


def test_migrations_see_djangos_field():
    name, path, args, kwargs = JSONField(default=list, blank=True).deconstruct()
    assert path == "django.db.models.JSONField"
    assert kwargs == {"default": list, "blank": True}


@pytest.mark.django_db
def test_values_round_trip_through_the_database():
    removed = {"photos": 3, "big": 2**70, "nested": {"list": [1.5, None, True, "x"]}, "text": "\\ud83d"}
    erasure = AccountErasure.objects.create(user_ref="6a1f2e3d-0000-4000-8000-000000000001", removed=removed)
    assert AccountErasure.objects.get(pk=erasure.pk).removed == removed
    trend = make_trend(category=make_category(), slug="json-trend")
    Trend.objects.filter(pk=trend.pk).update(tags=["dance", "duo"])
    assert Trend.objects.get(pk=trend.pk).tags == ["dance", "duo"]
    # a key of a JSON value, read by the database: still the value, not re-parsed text
    assert list(AccountErasure.objects.filter(pk=erasure.pk).values_list("removed__photos", flat=True)) == [3]
