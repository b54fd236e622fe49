"""registerDevice / unregisterDevice through GraphQL: one row per FCM token, owned by the last user."""

from __future__ import annotations

import pytest
from strawberry.relay import to_base64

from apps.accounts.models import Device, User

pytestmark = pytest.mark.django_db

REGISTER = """
mutation ($input: RegisterDeviceInput!) {
  registerDevice(input: $input) {
    __typename
    ... on DevicePayload { device { id token platform appVersion locale lastSeenAt } }
    ... on ValidationError { code message field }
  }
}
"""

UNREGISTER = """
mutation ($token: String!) {
  unregisterDevice(token: $token) {
    __typename
    ... on DeletePayload { id }
    ... on NotFound { code message field }
    ... on ValidationError { code message field }
  }
}
"""

NODE = """
query ($id: ID!) { node(id: $id) { __typename ... on Device { token platform } } }
"""

FCM_TOKEN = "fcm-registration-token-0123456789:APA91bH"


def device_input(**overrides) -> dict:
    return {"token": FCM_TOKEN, "platform": "IOS", "appVersion": "1.4.2", "locale": "de-DE"} | overrides


def register(gql, access_token: str | None, **overrides) -> dict:
    response = gql(REGISTER, {"input": device_input(**overrides)}, token=access_token)
    assert "errors" not in response, response
    return response["data"]["registerDevice"]


def user_of(auth: dict) -> User:
    return User.objects.get(email=auth["user"]["email"])


def device_gid(device: Device) -> str:
    return to_base64("Device", device.pk)


def test_register_returns_the_device(gql, sign_up):
    auth = sign_up()

    result = register(gql, auth["accessToken"])

    assert result["__typename"] == "DevicePayload"
    device = Device.objects.get()
    assert device.user == user_of(auth)
    assert result["device"] == {
        "id": device_gid(device),
        "token": FCM_TOKEN,
        "platform": "IOS",
        "appVersion": "1.4.2",
        "locale": "de-DE",
        "lastSeenAt": device.last_seen_at.isoformat(),
    }
    # The global id is a real one: the owner can read the device back through `node`.
    node = gql(NODE, {"id": result["device"]["id"]}, token=auth["accessToken"])["data"]["node"]
    assert node == {"__typename": "Device", "token": FCM_TOKEN, "platform": "IOS"}


def test_register_without_a_locale_defaults_to_english(gql, sign_up):
    auth = sign_up()
    result = register(gql, auth["accessToken"], locale=None, platform="ANDROID")
    assert result["device"]["locale"] == "en"
    assert result["device"]["platform"] == "ANDROID"


def test_registering_the_same_token_again_updates_in_place(gql, sign_up):
    auth = sign_up()
    first = register(gql, auth["accessToken"])

    again = register(
        gql,
        auth["accessToken"],
        token=f"  {FCM_TOKEN}  ",
        platform="ANDROID",
        appVersion="1.5.0",
        locale="fr",
    )

    assert again["__typename"] == "DevicePayload"
    assert again["device"]["id"] == first["device"]["id"]
    assert again["device"]["appVersion"] == "1.5.0"
    assert again["device"]["platform"] == "ANDROID"
    assert again["device"]["locale"] == "fr"
    assert again["device"]["lastSeenAt"] > first["device"]["lastSeenAt"]
    device = Device.objects.get()  # still one row
    assert (device.token, device.platform, device.app_version, device.locale) == (
        FCM_TOKEN,
        "ANDROID",
        "1.5.0",
        "fr",
    )


def test_the_same_token_registered_by_another_user_moves_to_them(gql, sign_up):
    old_owner, new_owner = sign_up(), sign_up()
    first = register(gql, old_owner["accessToken"])

    moved = register(gql, new_owner["accessToken"], appVersion="2.0.0")

    assert moved["__typename"] == "DevicePayload"
    device = Device.objects.get()  # one row, new owner
    assert device.user == user_of(new_owner)
    assert moved["device"]["id"] == first["device"]["id"] == device_gid(device)
    assert not Device.objects.filter(user=user_of(old_owner)).exists()
    # The old owner no longer sees it, nor can remove it.
    assert gql(NODE, {"id": moved["device"]["id"]}, token=old_owner["accessToken"])["data"]["node"] is None
    refused = gql(UNREGISTER, {"token": FCM_TOKEN}, token=old_owner["accessToken"])["data"]
    assert refused["unregisterDevice"]["__typename"] == "NotFound"
    assert Device.objects.filter(user=user_of(new_owner)).count() == 1


def test_register_without_signing_in_is_unauthenticated_and_writes_nothing(gql):
    response = gql(REGISTER, {"input": device_input()})

    assert response["data"] is None
    assert response["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert Device.objects.count() == 0


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (REGISTER, {"input": device_input(platform="WINDOWS")}),
        (
            REGISTER.replace("($input: RegisterDeviceInput!)", "").replace(
                "input: $input",
                'input: {token: "t", platform: WINDOWS, appVersion: "1.0"}',
            ),
            {},
        ),
        # appVersion is required by the schema: leaving it out never reaches the service.
        (REGISTER, {"input": {"token": FCM_TOKEN, "platform": "IOS"}}),
    ],
    ids=["unknown_platform_variable", "unknown_platform_literal", "app_version_left_out"],
)
def test_input_the_schema_refuses_is_a_validation_failure_and_writes_nothing(gql, sign_up, query, variables):
    auth = sign_up()

    response = gql(query, variables, token=auth["accessToken"])

    assert response.get("data") is None
    assert [error["extensions"]["code"] for error in response["errors"]] == ["GRAPHQL_VALIDATION_FAILED"]
    assert Device.objects.count() == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"token": ""}, "token"),
        ({"token": "   "}, "token"),
        ({"token": "x" * 513}, "token"),
        ({"appVersion": ""}, "appVersion"),
        ({"appVersion": "  "}, "appVersion"),
        ({"appVersion": "1." * 20}, "appVersion"),
        ({"locale": "x" * 36}, "locale"),
    ],
    ids=[
        "empty_token",
        "blank_token",
        "token_too_long",
        "empty_app_version",
        "blank_app_version",
        "app_version_too_long",
        "locale_too_long",
    ],
)
def test_bad_device_input_is_a_validation_error_with_its_field(gql, sign_up, overrides, field):
    auth = sign_up()

    result = register(gql, auth["accessToken"], **overrides)

    assert result["__typename"] == "ValidationError"
    assert result["code"] == "VALIDATION"
    assert result["field"] == field
    assert result["message"]
    assert Device.objects.count() == 0


def test_the_longest_token_is_accepted(gql, sign_up):
    auth = sign_up()
    assert register(gql, auth["accessToken"], token="x" * 512)["__typename"] == "DevicePayload"


def test_unregister_your_token_deletes_the_device(gql, sign_up):
    auth = sign_up()
    register(gql, auth["accessToken"])
    device = Device.objects.get()

    result = gql(UNREGISTER, {"token": FCM_TOKEN}, token=auth["accessToken"])["data"]["unregisterDevice"]

    assert result == {"__typename": "DeletePayload", "id": device_gid(device)}
    assert Device.objects.count() == 0


def test_unregistering_someone_elses_token_is_not_found_and_keeps_their_device(gql, sign_up):
    owner, other = sign_up(), sign_up()
    register(gql, owner["accessToken"])

    result = gql(UNREGISTER, {"token": FCM_TOKEN}, token=other["accessToken"])["data"]["unregisterDevice"]
    unknown = gql(UNREGISTER, {"token": "never-registered"}, token=other["accessToken"])["data"][
        "unregisterDevice"
    ]

    # Someone else's token and a token nobody registered read the same.
    assert (
        result
        == unknown
        == {
            "__typename": "NotFound",
            "code": "NOT_FOUND",
            "message": "This device is not registered to your account.",
            "field": "token",
        }
    )
    assert Device.objects.get().user == user_of(owner)


def test_unregister_without_signing_in_is_unauthenticated_and_keeps_the_device(gql, sign_up):
    register(gql, sign_up()["accessToken"])

    response = gql(UNREGISTER, {"token": FCM_TOKEN})

    assert response["data"] is None
    assert response["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert Device.objects.count() == 1
