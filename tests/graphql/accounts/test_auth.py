import pytest

from apps.accounts.models import RefreshToken, User
from apps.credits.models import CreditEntry
from tests.fixtures.api import PASSWORD, SIGN_UP

pytestmark = pytest.mark.django_db

SIGN_IN = """
mutation ($email: String!, $password: String!) {
  signIn(input: {email: $email, password: $password}) {
    __typename
    ... on AuthPayload { accessToken refreshToken user { email credits } }
    ... on RateLimited { code message retryAfterSeconds }
    ... on Error { code message }
  }
}
"""

REFRESH = """
mutation ($token: String!) {
  refreshToken(refreshToken: $token) {
    __typename
    ... on AuthPayload { accessToken refreshToken }
    ... on Error { code message }
  }
}
"""

ME = "{ me { id email credits } }"


def test_sign_up_gives_tokens_and_the_welcome_grant(gql, settings):
    settings.WELCOME_CREDITS = 25
    result = gql(SIGN_UP, {"email": "New.Person@Example.com", "password": PASSWORD})["data"]["signUp"]
    assert result["__typename"] == "AuthPayload"
    assert result["user"]["email"] == "new.person@example.com"
    assert result["user"]["credits"] == 25
    me = gql(ME, token=result["accessToken"])["data"]["me"]
    assert me == result["user"] | {"id": me["id"]}
    assert CreditEntry.objects.filter(kind="grant", reason="welcome").count() == 1


def test_sign_up_with_a_taken_email_is_a_typed_error_and_creates_nothing(gql, sign_up):
    sign_up(email="taken@example.com")
    result = gql(SIGN_UP, {"email": "TAKEN@example.com", "password": PASSWORD})["data"]["signUp"]
    assert result == {"__typename": "EmailTaken", "code": "EMAIL_TAKEN", "message": result["message"]}
    assert User.objects.count() == 1


@pytest.mark.parametrize(
    ("email", "password", "field_hint"),
    [
        ("not-an-email", PASSWORD, "email"),
        ("ok@example.com", "short", "password"),
        ("ok@example.com", "password123", "password"),
    ],
)
def test_sign_up_rejects_bad_input_with_a_validation_error(gql, email, password, field_hint):
    query = SIGN_UP.replace("... on Error { code message }", "... on ValidationError { code message field }")
    result = gql(query, {"email": email, "password": password})["data"]["signUp"]
    assert result["__typename"] == "ValidationError"
    assert result["code"] == "VALIDATION"
    assert result["field"] == field_hint
    assert result["message"]
    assert User.objects.count() == 0


def test_sign_in_with_the_right_password(gql, sign_up):
    sign_up(email="me@example.com")
    result = gql(SIGN_IN, {"email": "me@example.com", "password": PASSWORD})["data"]["signIn"]
    assert result["__typename"] == "AuthPayload"
    assert gql(ME, token=result["accessToken"])["data"]["me"]["email"] == "me@example.com"


def test_sign_in_with_a_wrong_password_or_unknown_email_is_the_same_error(gql, sign_up):
    sign_up(email="me@example.com")
    wrong = gql(SIGN_IN, {"email": "me@example.com", "password": "nope-nope-nope"})["data"]["signIn"]
    unknown = gql(SIGN_IN, {"email": "who@example.com", "password": PASSWORD})["data"]["signIn"]
    assert wrong["__typename"] == unknown["__typename"] == "InvalidCredentials"
    assert wrong["message"] == unknown["message"]


def test_sign_in_is_throttled_per_account(gql, sign_up, settings):
    settings.LOGIN_MAX_FAILURES_PER_ACCOUNT = 3
    sign_up(email="me@example.com")
    for _ in range(3):
        assert (
            gql(SIGN_IN, {"email": "me@example.com", "password": "wrong-wrong"})["data"]["signIn"][
                "__typename"
            ]
            == "InvalidCredentials"
        )
    # Even the right password is refused while the account is locked out.
    locked = gql(SIGN_IN, {"email": "me@example.com", "password": PASSWORD})["data"]["signIn"]
    assert locked["__typename"] == "RateLimited"
    assert locked["code"] == "RATE_LIMITED"
    assert locked["retryAfterSeconds"] > 0
    # Other accounts are not affected.
    sign_up(email="other@example.com")
    other = gql(SIGN_IN, {"email": "other@example.com", "password": PASSWORD})["data"]["signIn"]
    assert other["__typename"] == "AuthPayload"


def test_sign_in_is_throttled_per_ip(gql, sign_up, settings):
    settings.LOGIN_MAX_ATTEMPTS_PER_IP = 4
    for i in range(4):
        gql(SIGN_IN, {"email": f"x{i}@example.com", "password": "whatever-123"}, REMOTE_ADDR="10.1.2.3")
    result = gql(SIGN_IN, {"email": "y@example.com", "password": "whatever-123"}, REMOTE_ADDR="10.1.2.3")
    assert result["data"]["signIn"]["__typename"] == "RateLimited"
    other_ip = gql(SIGN_IN, {"email": "y@example.com", "password": "whatever-123"}, REMOTE_ADDR="10.9.9.9")
    assert other_ip["data"]["signIn"]["__typename"] == "InvalidCredentials"


def test_refresh_rotates_and_each_refresh_token_works_once(gql, sign_up):
    first = sign_up()
    second = gql(REFRESH, {"token": first["refreshToken"]})["data"]["refreshToken"]
    assert second["__typename"] == "AuthPayload"
    assert second["refreshToken"] != first["refreshToken"]
    assert gql(ME, token=second["accessToken"])["data"]["me"]["email"] == first["user"]["email"]
    third = gql(REFRESH, {"token": second["refreshToken"]})["data"]["refreshToken"]
    assert third["__typename"] == "AuthPayload"


def test_replaying_a_used_refresh_token_revokes_the_whole_family(gql, sign_up):
    first = sign_up()
    second = gql(REFRESH, {"token": first["refreshToken"]})["data"]["refreshToken"]
    # An attacker replays the first (already used) token.
    replay = gql(REFRESH, {"token": first["refreshToken"]})["data"]["refreshToken"]
    assert replay["__typename"] == "TokenReused"
    assert replay["code"] == "TOKEN_REUSED"
    # The legitimate holder's newer token is revoked too: the family is dead.
    after = gql(REFRESH, {"token": second["refreshToken"]})["data"]["refreshToken"]
    assert after["__typename"] == "TokenReused"
    assert RefreshToken.objects.filter(revoked_at__isnull=True).count() == 0


def test_a_revoked_family_does_not_touch_other_sign_ins(gql, sign_up):
    first = sign_up(email="me@example.com")
    other_session = gql(SIGN_IN, {"email": "me@example.com", "password": PASSWORD})["data"]["signIn"]
    gql(REFRESH, {"token": first["refreshToken"]})
    gql(REFRESH, {"token": first["refreshToken"]})  # reuse: revokes the first family only
    still = gql(REFRESH, {"token": other_session["refreshToken"]})["data"]["refreshToken"]
    assert still["__typename"] == "AuthPayload"


def test_unknown_or_expired_refresh_tokens_are_invalid(gql, sign_up):
    from django.utils import timezone

    assert gql(REFRESH, {"token": "made-up"})["data"]["refreshToken"]["__typename"] == "TokenInvalid"
    first = sign_up()
    RefreshToken.objects.update(expires_at=timezone.now())
    assert (
        gql(REFRESH, {"token": first["refreshToken"]})["data"]["refreshToken"]["__typename"] == "TokenInvalid"
    )


def test_me_is_null_without_a_token(gql):
    assert gql(ME) == {"data": {"me": None}}


@pytest.mark.parametrize("token", ["garbage", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."])
def test_a_bad_token_is_unauthenticated_not_anonymous(gql, token):
    result = gql(ME, token=token)
    assert result["data"] is None or result["data"]["me"] is None
    assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_an_expired_access_token_is_unauthenticated(gql, sign_up, settings):
    from datetime import timedelta

    from django.utils import timezone

    from apps.accounts.tokens import access_token_issue

    user = User.objects.get(email=sign_up()["user"]["email"])
    token, _ = access_token_issue(user_id=user.id, now=timezone.now() - timedelta(hours=1))
    result = gql(ME, token=token)
    assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_a_token_signed_with_another_key_is_refused(gql, sign_up):
    import jwt

    user_id = User.objects.get(email=sign_up()["user"]["email"]).id
    forged = jwt.encode(
        {"sub": str(user_id), "iss": "diffuse-backend", "typ": "access", "iat": 1, "exp": 4_000_000_000},
        "another-key-that-is-long-enough-for-hs256",
        algorithm="HS256",
    )
    assert gql(ME, token=forged)["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_a_deactivated_user_token_stops_working(gql, sign_up):
    auth = sign_up()
    User.objects.update(is_active=False)
    assert gql(ME, token=auth["accessToken"])["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert (
        gql(REFRESH, {"token": auth["refreshToken"]})["data"]["refreshToken"]["__typename"] == "TokenInvalid"
    )


def test_sign_ups_are_capped_per_ip_so_welcome_credits_cannot_be_farmed(gql, settings):
    settings.SIGNUPS_MAX_PER_IP_PER_HOUR = 2
    for i in range(2):
        result = gql(SIGN_UP, {"email": f"farm{i}@example.com", "password": PASSWORD}, REMOTE_ADDR="10.0.0.7")
        assert result["data"]["signUp"]["__typename"] == "AuthPayload"
    refused = gql(SIGN_UP, {"email": "farm3@example.com", "password": PASSWORD}, REMOTE_ADDR="10.0.0.7")
    assert refused["data"]["signUp"]["__typename"] == "RateLimited"
    assert not User.objects.filter(email="farm3@example.com").exists()
    assert CreditEntry.objects.filter(reason="welcome").count() == 2
    other = gql(SIGN_UP, {"email": "farm3@example.com", "password": PASSWORD}, REMOTE_ADDR="10.0.0.8")
    assert other["data"]["signUp"]["__typename"] == "AuthPayload"
