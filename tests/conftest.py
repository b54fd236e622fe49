"""The root conftest: the fixture modules of tests/fixtures (registered once, here: pytest reads
`pytest_plugins` only in the root conftest), the `services` marker's skip, and what every test gets.

`make test` sets DATABASE_URL and REDIS_URL to the machine's PostgreSQL and Redis, so the suite runs
against real services; tests marked `services` need them and fail under CI when they are missing.
Per-folder conftest.py files hold only autouse fixtures that belong to their folder.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache

from tests.fixtures.env import SERVICES, UNDER_CI

pytest_plugins = [
    "tests.fixtures.api",
    "tests.fixtures.live",
    "tests.fixtures.storage",
    "tests.fixtures.uploads",
    "tests.fixtures.characters",
    "tests.fixtures.generations",
    "tests.fixtures.push",
    "tests.fixtures.play",
    "tests.fixtures.gpu",
    "tests.fixtures.moderation",
    "tests.fixtures.apple",
    "tests.fixtures.static",
]


def pytest_collection_modifyitems(config, items) -> None:
    if SERVICES:
        return
    if UNDER_CI:
        raise pytest.UsageError("CI must run with DATABASE_URL and REDIS_URL (PostgreSQL and Redis)")
    skip = pytest.mark.skip(reason="needs PostgreSQL and Redis (run `make test` with them up)")
    for item in items:
        if "services" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _tmp_media(settings, tmp_path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
