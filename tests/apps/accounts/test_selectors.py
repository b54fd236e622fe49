"""A user looks up their own account and devices by id, nobody else's; signed out, nothing."""

from __future__ import annotations

import pytest

from apps.accounts.models import Device
from apps.accounts.selectors import devices_visible_to, users_visible_to

pytestmark = pytest.mark.django_db


def test_users_and_devices_are_visible_to_their_owner_only(django_user_model):
    ann = django_user_model.objects.create_user("ann@example.com", "a-long-test-password-42")
    bob = django_user_model.objects.create_user("bob@example.com", "a-long-test-password-42")
    phone = Device.objects.create(user=ann, token="ann-phone", platform="IOS", app_version="1.0")
    Device.objects.create(user=bob, token="bob-phone", platform="ANDROID", app_version="1.0")

    assert list(users_visible_to(user=ann)) == [ann]
    assert list(devices_visible_to(user=ann)) == [phone]
    assert not users_visible_to(user=None).exists()
    assert not devices_visible_to(user=None).exists()
