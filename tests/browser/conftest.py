"""The browser every test module here shares (one chromium per module, a fresh context per test) and the
folder its screenshots go to (printed; look at the pictures)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.driver import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    driver = Browser()
    yield driver
    driver.close()


@pytest.fixture(scope="module")
def screens(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("admin-screens")
    print(f"\nadmin screenshots: {folder}")
    return folder
