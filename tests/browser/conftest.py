"""The browser every test module here shares (one chromium per module, a fresh context per test), the
folder its screenshots go to (printed; look at the pictures), and a trend curator to sign in as."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Group

from apps.accounts.models import User
from apps.trends.curators import CURATOR_GROUP, curator_group_ensure
from tests.browser.driver import PASSWORD, Browser


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


@pytest.fixture
def curator() -> User:
    curator_group_ensure()
    user = User.objects.create_user(email="curator@example.com", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name=CURATOR_GROUP))
    return user
