"""The photo checks' verdicts on a fixed corpus stay what they were when the corpus was recorded.

A change made for speed (a reduced decode, a cheaper detector, measurements on fewer pixels) must not move
a verdict: every photo the tests use, the bench's noisy 1-12 MP photos, and more poses (tilts to 20
degrees), face sizes, exposures and blurs of the portrait (fixtures/photos/make_photos.py,
`verdict_corpus`). fixtures/photos/verdicts.json holds each photo's reasons and face count as recorded
before the issue 13 part 5 changes; a deliberate change of verdicts re-records it and says why.
Pure: no database, no services.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import pytest

from apps.characters.photo_checks import check_photo

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("make_photos", ROOT / "fixtures" / "photos" / "make_photos.py")
make_photos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_photos)

RECORDED = json.loads((ROOT / "fixtures" / "photos" / "verdicts.json").read_text())


@functools.cache
def corpus() -> dict[str, bytes]:
    return make_photos.verdict_corpus()


def test_the_corpus_is_the_recorded_one():
    assert sorted(corpus()) == sorted(RECORDED)


def test_the_corpus_holds_accepted_and_rejected_photos_of_every_kind():
    reasons = {reason for verdict in RECORDED.values() for reason in verdict["reasons"]}
    assert sum(not verdict["reasons"] for verdict in RECORDED.values()) >= 50
    assert reasons >= {"NO_FACE", "MULTIPLE_FACES", "FACE_TOO_SMALL", "FACE_CUT_OFF", "BLURRY", "TOO_DARK"}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_verdict_is_the_recorded_one(name):
    verdict = check_photo(corpus()[name], outputs=False)
    assert {"reasons": verdict.reasons, "face_count": verdict.face_count} == RECORDED[name]
