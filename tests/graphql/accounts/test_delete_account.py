"""deleteAccount: the password check, then every personal artifact goes and every token stops working."""

from __future__ import annotations

import pytest

from apps.accounts.erasure import user_storage_prefixes
from apps.accounts.models import AccountErasure, Device, RefreshToken, User
from apps.characters.models import Character, ConsentRecord, ErasureRecord
from apps.credits.models import CreditEntry, Wallet
from apps.generations.models import Generation, GenerationStatus
from apps.storage.backends import get_storage
from apps.storage.models import Upload
from tests.fixtures.api import PASSWORD
from tests.fixtures.characters import verified_upload
from tests.graphql.generations.helpers import CREATE as GENERATE
from tests.graphql.generations.helpers import a_trend, key, ledger, wallet

pytestmark = [pytest.mark.django_db, pytest.mark.services, pytest.mark.usefixtures("local_storage")]

DELETE_ACCOUNT = """
mutation ($password: String) {
  deleteAccount(password: $password) {
    __typename
    ... on DeletePayload { id }
    ... on InvalidCredentials { code message }
  }
}
"""
SIGN_IN = """
mutation ($email: String!, $password: String!) {
  signIn(input: {email: $email, password: $password}) { __typename ... on Error { code } }
}
"""
REFRESH = """
mutation ($token: String!) {
  refreshToken(refreshToken: $token) { __typename ... on Error { code } }
}
"""
CREATE = """
mutation { createCharacter(input: {name: "Me", consent: true}) { __typename } }
"""
REGISTER = """
mutation ($token: String!) {
  registerDevice(input: {token: $token, platform: IOS, appVersion: "1.0"}) { __typename }
}
"""
ME = "{ me { id email } }"


def _account_with_data(gql, sign_up, email: str = "me@example.com") -> tuple[dict, User]:
    payload = sign_up(email=email)
    token = payload["accessToken"]
    assert gql(CREATE, token=token)["data"]["createCharacter"]["__typename"] == "CharacterPayload"
    assert (
        gql(REGISTER, {"token": f"fcm-{email}"}, token=token)["data"]["registerDevice"]["__typename"]
        == "DevicePayload"
    )
    user = User.objects.get(email=email)
    verified_upload(user, b"\xff\xd8 a selfie")
    get_storage().write(f"generations/{user.id}/g1/video.mp4", b"video", content_type="video/mp4")
    get_storage().write(f"incoming/{user.id}/stray", b"stray", content_type="image/jpeg")
    return payload, user


def _scan(user: User) -> list[str]:
    storage = get_storage()
    return [key for prefix in user_storage_prefixes(user=user) for key in storage.list_keys(prefix)]


def test_delete_account_removes_everything_and_every_token_stops_working(gql, sign_up):
    payload, user = _account_with_data(gql, sign_up)
    other, other_user = _account_with_data(gql, sign_up, email="other@example.com")
    assert len(_scan(user)) == 3
    entries = CreditEntry.objects.filter(wallet__user=user).count()
    assert entries > 0

    result = gql(DELETE_ACCOUNT, {"password": PASSWORD}, token=payload["accessToken"])["data"][
        "deleteAccount"
    ]
    assert result["__typename"] == "DeletePayload"

    # Tokens and sign-in.
    me = gql(ME, token=payload["accessToken"])
    assert me["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    refreshed = gql(REFRESH, {"token": payload["refreshToken"]})["data"]["refreshToken"]
    assert refreshed == {"__typename": "TokenInvalid", "code": "TOKEN_INVALID"}
    signed_in = gql(SIGN_IN, {"email": "me@example.com", "password": PASSWORD})["data"]["signIn"]
    assert signed_in == {"__typename": "InvalidCredentials", "code": "INVALID_CREDENTIALS"}

    # Storage and rows.
    assert _scan(user) == []
    assert Upload.objects.filter(user=user).count() == 0
    assert Device.objects.filter(user=user).count() == 0
    assert RefreshToken.objects.filter(user=user).count() == 0
    assert Character.objects.filter(owner=user).count() == 0
    assert ErasureRecord.objects.count() == 1
    assert ConsentRecord.objects.count() == 2  # kept: it proves the consent, holds no biometric data
    row = User.objects.get(pk=user.pk)
    assert (row.is_active, row.email, row.firebase_uid) == (False, f"deleted-{user.pk}@deleted.invalid", None)
    assert not row.has_usable_password()
    # The ledger stays.
    assert Wallet.objects.filter(user=user).exists()
    assert CreditEntry.objects.filter(wallet__user=user).count() == entries
    # One audited record.
    erasure = AccountErasure.objects.get()
    assert erasure.user_ref == user.pk
    assert {key: erasure.removed[key] for key in ("soul_ids", "uploads", "devices", "storage_objects")} == {
        "soul_ids": 1,
        "uploads": 1,
        "devices": 1,
        "storage_objects": 3,
    }
    assert erasure.removed["refresh_tokens"] >= 1

    # The other account is untouched.
    assert len(_scan(other_user)) == 3
    assert gql(ME, token=other["accessToken"])["data"]["me"]["email"] == "other@example.com"
    assert Character.objects.filter(owner=other_user).count() == 1


@pytest.mark.parametrize("password", [None, "", "wrong-password-1"])
def test_a_password_account_must_give_its_password(gql, sign_up, password):
    payload, user = _account_with_data(gql, sign_up)
    result = gql(DELETE_ACCOUNT, {"password": password}, token=payload["accessToken"])["data"][
        "deleteAccount"
    ]
    assert result == {
        "__typename": "InvalidCredentials",
        "code": "INVALID_CREDENTIALS",
        "message": "The password is not right.",
    }
    assert len(_scan(user)) == 3
    assert Character.objects.filter(owner=user).count() == 1
    assert Device.objects.filter(user=user).count() == 1
    assert AccountErasure.objects.count() == 0
    assert gql(ME, token=payload["accessToken"])["data"]["me"]["email"] == "me@example.com"


def test_delete_account_needs_a_signed_in_user(gql):
    result = gql(DELETE_ACCOUNT, {"password": PASSWORD})
    assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.usefixtures("shipped_routes")
def test_delete_account_cancels_a_queued_generation_and_releases_its_hold(gql, sign_up, settings):
    settings.WELCOME_CREDITS = 50
    payload = sign_up(email="me@example.com")
    user = User.objects.get(email="me@example.com")
    trend = a_trend(requires="NONE", price_standard=4)
    variables = {"input": {"trendSlug": trend.slug, "idempotencyKey": key()}}
    created = gql(GENERATE, variables, token=payload["accessToken"])["data"]["createGeneration"]
    assert created["__typename"] == "GenerationPayload", created
    assert wallet(user) == (46, 4)

    result = gql(DELETE_ACCOUNT, {"password": PASSWORD}, token=payload["accessToken"])["data"][
        "deleteAccount"
    ]
    assert result["__typename"] == "DeletePayload"
    generation = Generation.objects.get()
    assert generation.status == GenerationStatus.CANCELED
    assert generation.deleted_at is not None
    assert wallet(user) == (50, 0)
    assert ledger(user) == [("grant", 50), ("hold", 4), ("release", 4)]  # the ledger is kept
    assert AccountErasure.objects.get().removed["generations"] == 1


def test_an_account_without_a_password_needs_none(gql, sign_up):
    payload, user = _account_with_data(gql, sign_up)
    user.set_unusable_password()  # as a Firebase (Google/Apple) account has
    user.save(update_fields=["password"])
    result = gql(DELETE_ACCOUNT, token=payload["accessToken"])["data"]["deleteAccount"]
    assert result["__typename"] == "DeletePayload"
    assert _scan(user) == []
    assert User.objects.get(pk=user.pk).is_active is False
