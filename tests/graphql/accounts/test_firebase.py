"""signInWithFirebase through GraphQL, with real RS256 ID tokens checked by the real firebase-admin.

Only Google's edge is fake (tests/fakes/google.py): it signs the tokens with a local RSA key and serves
that key's certificate where firebase-admin fetches Google's. The Auth emulator shortcut, which skips
signature checks, is off in every test here.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from apps.accounts.models import RefreshToken, User
from apps.core.errors import TokenInvalid
from apps.credits.models import CreditEntry
from tests.fakes.google import FakeGoogle, signing_key
from tests.fixtures.api import PASSWORD
from tests.fixtures.live import http_graphql

pytestmark = pytest.mark.django_db

PROJECT = "diffuse-test"

SIGN_IN_WITH_FIREBASE = """
mutation ($idToken: String!) {
  signInWithFirebase(idToken: $idToken) {
    __typename
    ... on AuthPayload { accessToken refreshToken user { id email credits } }
    ... on Error { code message }
  }
}
"""

SIGN_IN = """
mutation ($email: String!, $password: String!) {
  signIn(input: {email: $email, password: $password}) { __typename }
}
"""

REFRESH = """
mutation ($token: String!) { refreshToken(refreshToken: $token) { __typename } }
"""

ME = "{ me { id email credits } }"


@pytest.fixture
def google(settings, monkeypatch) -> FakeGoogle:
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST", raising=False)
    settings.FIREBASE_CREDENTIALS = ""
    settings.FIREBASE_PROJECT_ID = PROJECT  # a settings change also drops any Firebase app made before
    fake = FakeGoogle(project_id=PROJECT)
    fake.install(monkeypatch)
    return fake


def firebase_sign_in(gql, id_token: str) -> dict:
    response = gql(SIGN_IN_WITH_FIREBASE, {"idToken": id_token})
    assert "errors" not in response, response
    return response["data"]["signInWithFirebase"]


def welcome_grants() -> int:
    return CreditEntry.objects.filter(kind="grant", reason="welcome").count()


def assert_token_invalid(result: dict) -> None:
    assert result == {
        "__typename": "TokenInvalid",
        "code": "TOKEN_INVALID",
        "message": TokenInvalid.default_message,
    }


def test_first_sign_in_creates_the_account_with_the_welcome_grant(gql, google, settings):
    settings.WELCOME_CREDITS = 25
    token = google.id_token(
        uid="google-uid-1", email="New.Person@Gmail.com", email_verified=True, provider="google.com"
    )

    result = firebase_sign_in(gql, token)

    assert result["__typename"] == "AuthPayload"
    assert result["user"]["email"] == "new.person@gmail.com"
    assert result["user"]["credits"] == 25
    user = User.objects.get()
    assert user.firebase_uid == "google-uid-1"
    assert user.email == "new.person@gmail.com"
    assert not user.has_usable_password()
    assert welcome_grants() == 1
    # Our own tokens, like signIn's: the access token works, the refresh token rotates.
    assert gql(ME, token=result["accessToken"])["data"]["me"] == result["user"]
    refreshed = gql(REFRESH, {"token": result["refreshToken"]})["data"]["refreshToken"]
    assert refreshed["__typename"] == "AuthPayload"


def test_the_same_uid_signs_in_again_as_the_same_user_without_a_second_grant(gql, google, settings):
    settings.WELCOME_CREDITS = 20
    first = firebase_sign_in(gql, google.id_token(uid="uid-7", email="me@example.com", email_verified=True))
    # A later token of the same Firebase user, whatever its email now says.
    again = firebase_sign_in(
        gql, google.id_token(uid="uid-7", email="renamed@example.com", email_verified=True)
    )

    assert again["__typename"] == "AuthPayload"
    assert again["user"] == first["user"]
    assert again["user"]["credits"] == 20
    assert User.objects.count() == 1
    assert welcome_grants() == 1
    assert RefreshToken.objects.filter(user__firebase_uid="uid-7").count() == 2


def test_googles_certificates_are_fetched_once_then_served_from_the_http_cache(gql, google):
    for n in range(3):
        assert firebase_sign_in(gql, google.id_token(uid=f"uid-{n}"))["__typename"] == "AuthPayload"
    assert google.cert_fetches == 1


def test_a_verified_email_links_the_existing_password_account(gql, google, sign_up, settings):
    settings.WELCOME_CREDITS = 20
    account = sign_up(email="me@example.com")

    result = firebase_sign_in(
        gql,
        google.id_token(uid="apple-uid", email="Me@Example.com", email_verified=True, provider="apple.com"),
    )

    assert result["__typename"] == "AuthPayload"
    assert result["user"] == account["user"]  # same id, email and balance: no second welcome grant
    user = User.objects.get()
    assert user.firebase_uid == "apple-uid"
    assert welcome_grants() == 1
    # Both ways in keep working.
    assert gql(SIGN_IN, {"email": "me@example.com", "password": PASSWORD})["data"]["signIn"] == {
        "__typename": "AuthPayload"
    }
    assert firebase_sign_in(gql, google.id_token(uid="apple-uid"))["user"] == account["user"]


def test_an_unverified_email_does_not_link_the_password_account_that_has_it(gql, google, sign_up):
    sign_up(email="victim@example.com")
    tokens_before = RefreshToken.objects.count()

    result = firebase_sign_in(
        gql, google.id_token(uid="attacker", email="victim@example.com", email_verified=False)
    )

    assert result["__typename"] == "EmailTaken"
    assert result["code"] == "EMAIL_TAKEN"
    assert "verify your email" in result["message"]
    user = User.objects.get()  # nothing created
    assert user.email == "victim@example.com"
    assert user.firebase_uid is None  # nothing linked
    assert RefreshToken.objects.count() == tokens_before
    assert welcome_grants() == 1


def test_an_unverified_email_is_not_given_to_a_new_account(gql, google, sign_up):
    result = firebase_sign_in(
        gql, google.id_token(uid="unverified-uid", email="someone@example.com", email_verified=False)
    )

    assert result["__typename"] == "AuthPayload"
    assert result["user"]["email"] != "someone@example.com"
    assert result["user"]["email"].endswith("@users.invalid")
    assert User.objects.get().firebase_uid == "unverified-uid"
    # The address stays free for whoever can prove it is theirs.
    sign_up(email="someone@example.com")
    assert User.objects.count() == 2


def test_a_provider_without_email_gets_a_placeholder_address(gql, google, settings):
    settings.WELCOME_CREDITS = 20
    result = firebase_sign_in(
        gql, google.id_token(uid="phone-uid", provider="phone", phone_number="+15550100")
    )

    assert result["__typename"] == "AuthPayload"
    assert result["user"]["credits"] == 20
    email = result["user"]["email"]
    assert email.startswith("firebase-")
    assert email.endswith("@users.invalid")
    assert User.objects.get(firebase_uid="phone-uid").email == email
    # The same phone user again: the same account.
    assert firebase_sign_in(gql, google.id_token(uid="phone-uid", provider="phone"))["user"] == result["user"]


def test_an_email_linked_to_another_firebase_user_is_not_taken_over(gql, google):
    first = firebase_sign_in(gql, google.id_token(uid="uid-a", email="a@example.com", email_verified=True))

    other = firebase_sign_in(gql, google.id_token(uid="uid-b", email="a@example.com", email_verified=True))

    assert other["__typename"] == "EmailTaken"
    assert User.objects.get().firebase_uid == "uid-a"
    assert firebase_sign_in(gql, google.id_token(uid="uid-a"))["user"] == first["user"]


def test_a_disabled_account_cannot_sign_in_with_firebase(gql, google):
    firebase_sign_in(gql, google.id_token(uid="uid-off"))
    User.objects.update(is_active=False)
    tokens_before = RefreshToken.objects.count()

    result = firebase_sign_in(gql, google.id_token(uid="uid-off"))

    assert result["__typename"] == "TokenInvalid"
    assert result["message"] == "This account is disabled."
    assert RefreshToken.objects.count() == tokens_before


@pytest.mark.services
def test_concurrent_first_sign_ins_make_one_account_and_one_grant(asgi_server, google):
    token = google.id_token(uid="racer", email="racer@example.com", email_verified=True)

    def sign_in(_: int) -> dict:
        return http_graphql(asgi_server.url, SIGN_IN_WITH_FIREBASE, {"idToken": token})

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(sign_in, range(8)))

    # The losers of the race on the unique uid find the winner's account instead of failing.
    assert [r.get("data") and r["data"]["signInWithFirebase"]["__typename"] for r in results] == [
        "AuthPayload"
    ] * 8
    assert len({r["data"]["signInWithFirebase"]["user"]["id"] for r in results}) == 1
    assert User.objects.count() == 1
    assert welcome_grants() == 1
    assert RefreshToken.objects.count() == 8


def _unsigned(google: FakeGoogle) -> str:
    import base64

    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "iss": f"https://securetoken.google.com/{PROJECT}",
        "aud": PROJECT,
        "sub": "forged",
        "iat": now,
        "exp": now + 3600,
        "auth_time": now,
    }
    return f"{b64({'alg': 'none', 'kid': google.key.kid})}.{b64(claims)}."


REFUSED_TOKENS = {
    "expired": lambda g: g.id_token(uid="u", issued_at=int(time.time()) - 7200, lifetime_seconds=3600),
    "issued_in_the_future": lambda g: g.id_token(uid="u", issued_at=int(time.time()) + 600),
    "wrong_audience": lambda g: g.id_token(uid="u", aud="another-project"),
    "wrong_issuer": lambda g: g.id_token(uid="u", iss="https://securetoken.google.com/another-project"),
    "signed_by_another_key": lambda g: g.id_token(uid="u", key=signing_key("attacker"), kid=g.key.kid),
    "unknown_kid": lambda g: g.id_token(uid="u", key=signing_key("rotated-away")),
    "unsigned_alg_none": _unsigned,
    "garbage": lambda g: "garbage",
    "three_garbage_segments": lambda g: "eyJhbGciOiJSUzI1NiJ9.not-json.c2ln",
    "empty": lambda g: "",
    "far_too_long": lambda g: g.id_token(uid="u", padding="x" * 20_000),
}


@pytest.mark.parametrize("make_token", REFUSED_TOKENS.values(), ids=REFUSED_TOKENS.keys())
def test_a_bad_token_is_token_invalid_and_creates_nothing(gql, google, make_token):
    result = firebase_sign_in(gql, make_token(google))

    assert_token_invalid(result)
    assert User.objects.count() == 0
    assert RefreshToken.objects.count() == 0
    assert CreditEntry.objects.count() == 0


def test_googles_certificate_endpoint_down_is_a_server_error_not_a_bad_token(gql, google):
    google.certs_status = 503

    response = gql(SIGN_IN_WITH_FIREBASE, {"idToken": google.id_token(uid="u", email="u@example.com")})

    # The client must not drop a good Firebase session for our outage: not TokenInvalid, a retryable 5xx.
    assert response["data"] is None
    assert response["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert google.cert_fetches == 1
    assert User.objects.count() == 0
    # Once Google answers again, the same token works.
    google.certs_status = 200
    token = google.id_token(uid="u", email="u@example.com", email_verified=True)
    assert firebase_sign_in(gql, token)["__typename"] == "AuthPayload"


def test_without_firebase_set_up_sign_in_is_a_typed_unsupported_option(gql, google, settings):
    settings.FIREBASE_PROJECT_ID = ""
    settings.FIREBASE_CREDENTIALS = ""

    response = gql(SIGN_IN_WITH_FIREBASE, {"idToken": google.id_token(uid="u")})

    result = response["data"]["signInWithFirebase"]
    assert result["__typename"] == "UnsupportedOption", result
    assert "email and password" in result["message"]
    assert google.cert_fetches == 0
    assert User.objects.count() == 0


def test_a_service_account_json_gives_the_project_id(gql, google, settings, tmp_path):
    from cryptography.hazmat.primitives import serialization

    key = signing_key("service-account")
    service_account = {
        "type": "service_account",
        "project_id": "diffuse-from-json",
        "private_key_id": "0123456789abcdef",
        "private_key": key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "client_email": "firebase-adminsdk@diffuse-from-json.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(service_account))
    settings.FIREBASE_PROJECT_ID = ""
    settings.FIREBASE_CREDENTIALS = str(path)

    token = google.id_token(uid="sa-user", project_id="diffuse-from-json")
    assert firebase_sign_in(gql, token)["__typename"] == "AuthPayload"
    # A token of the project the settings no longer name is another project's token.
    assert_token_invalid(firebase_sign_in(gql, google.id_token(uid="other")))
    assert list(User.objects.values_list("firebase_uid", flat=True)) == ["sa-user"]


def test_an_unreadable_service_account_json_is_a_configuration_error(gql, google, settings, tmp_path, caplog):
    path = tmp_path / "missing.json"
    settings.FIREBASE_CREDENTIALS = str(path)

    with caplog.at_level(logging.ERROR, logger="graphql_schema"):
        response = gql(SIGN_IN_WITH_FIREBASE, {"idToken": google.id_token(uid="u")})

    assert response["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert f"FIREBASE_CREDENTIALS='{path}'" in caplog.text
    assert User.objects.count() == 0
