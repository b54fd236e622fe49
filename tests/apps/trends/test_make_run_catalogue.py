"""`make run` shows the catalogue: the demo trends on the home screen, covers served, rotation scheduled."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from tests.integration.test_make_run import _start

HOME = """{ homeScreen(platform: IOS, appVersion: "2.0", locale: "en") { sections { __typename
  ... on HomeSection { title } ... on TrendCarouselSection { trends { slug coverImage { url } } } } } }"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
    }
    yield from _start(env, tmp_path_factory.mktemp("var"))


def test_make_run_serves_the_demo_catalogue_and_schedules_the_rotation(served):
    base, log, _ = served
    sections = httpx.post(f"{base}/graphql", json={"query": HOME}, timeout=10).json()["data"]["homeScreen"][
        "sections"
    ]
    types = [s["__typename"] for s in sections]
    assert types[:4] == [
        "HeroSection",
        "CategoryChipsSection",
        "TrendCarouselSection",
        "TrendCarouselSection",
    ]
    trending = sections[2]["trends"]
    assert len(trending) >= 10
    cover = httpx.get(base + trending[0]["coverImage"]["url"], timeout=10)
    assert cover.status_code == 200 and cover.headers["content-type"] == "image/jpeg"
    assert "trends: 34 live" in log.read_text()
    # The embedded scheduler enqueues the rotation at start; the embedded worker runs it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text()
        if "trend rotation enqueued" in text and text.count("trend rotation:") >= 2:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("no scheduled rotation ran:\n" + log.read_text())
