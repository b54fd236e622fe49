"""The wallet as the apps see it over GraphQL: `wallet { balance held }` and `me { credits }`."""

from __future__ import annotations

import pytest

from apps.accounts.models import Device, User
from apps.credits.services import credits_capture, credits_hold, credits_release

pytestmark = pytest.mark.django_db

WALLET_AND_ME = "{ wallet { balance held } me { credits } }"


def _device(user: User) -> Device:
    return Device.objects.create(
        user=user, token=f"t-{Device.objects.count()}", platform="IOS", app_version="1"
    )


def test_wallet_and_me_reflect_the_welcome_grant_and_holds(gql, sign_up, settings):
    settings.WELCOME_CREDITS = 40
    auth = sign_up()
    token = auth["accessToken"]
    user = User.objects.get(email=auth["user"]["email"])
    assert gql(WALLET_AND_ME, token=token)["data"] == {
        "wallet": {"balance": 40, "held": 0},
        "me": {"credits": 40},
    }

    first, second = _device(user), _device(user)
    credits_hold(user=user, amount=15, owner=first)
    credits_hold(user=user, amount=10, owner=second)
    assert gql(WALLET_AND_ME, token=token)["data"] == {
        "wallet": {"balance": 15, "held": 25},
        "me": {"credits": 15},
    }

    credits_capture(owner=first)
    credits_release(owner=second)
    assert gql(WALLET_AND_ME, token=token)["data"] == {
        "wallet": {"balance": 25, "held": 0},
        "me": {"credits": 25},
    }


def test_each_user_sees_only_their_own_wallet(gql, sign_up, settings):
    settings.WELCOME_CREDITS = 10
    mine, theirs = sign_up(), sign_up()
    them = User.objects.get(email=theirs["user"]["email"])
    credits_hold(user=them, amount=4, owner=_device(them))
    assert gql(WALLET_AND_ME, token=mine["accessToken"])["data"] == {
        "wallet": {"balance": 10, "held": 0},
        "me": {"credits": 10},
    }
    assert gql(WALLET_AND_ME, token=theirs["accessToken"])["data"]["wallet"] == {"balance": 6, "held": 4}


def test_wallet_without_a_grant_is_zero(gql, sign_up, settings):
    settings.WELCOME_CREDITS = 0
    auth = sign_up()
    assert gql(WALLET_AND_ME, token=auth["accessToken"])["data"] == {
        "wallet": {"balance": 0, "held": 0},
        "me": {"credits": 0},
    }


def test_wallet_needs_a_signed_in_user(gql):
    result = gql("{ wallet { balance held } }")
    assert result["data"] is None
    assert [error["extensions"]["code"] for error in result["errors"]] == ["UNAUTHENTICATED"]
