"""FCM at Google's edge only: the real firebase-admin and google-auth, `requests` faked at its adapter.

The Firebase app is made from a service-account JSON written here (with the fake's RSA key), so
google-auth signs a real JWT, trades it for an access token at the fake OAuth endpoint, and firebase-admin
posts each message to the fake `messages:send` with that token.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from apps.accounts.models import Device, User
from apps.accounts.services import device_register
from tests.conftest import PASSWORD
from tests.fakes.google import FakeFcm, FakeGoogle

PROJECT = "diffuse-push-test"


@pytest.fixture
def google(monkeypatch) -> FakeGoogle:
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST", raising=False)
    fake = FakeGoogle(project_id=PROJECT)
    fake.install(monkeypatch)
    return fake


@pytest.fixture
def fcm(google, settings, tmp_path) -> FakeFcm:
    credentials = tmp_path / "service-account.json"
    credentials.write_text(json.dumps(google.service_account_info()))
    settings.FIREBASE_PROJECT_ID = ""  # taken from the JSON; a settings change drops any earlier app
    settings.FIREBASE_CREDENTIALS = str(credentials)
    settings.PUSH_BACKEND = "fcm"
    return google.enable_fcm()


def make_user() -> User:
    return User.objects.create_user(f"push-{uuid.uuid4().hex[:12]}@example.com", PASSWORD)


def make_device(user: User, *, platform: str = "IOS", locale: str = "en", token: str | None = None) -> Device:
    token = token or f"fcm-token-{uuid.uuid4().hex}"
    return device_register(user=user, token=token, platform=platform, app_version="1.4.0", locale=locale)


def wait_for(condition, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
