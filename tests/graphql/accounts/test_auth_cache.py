"""A known access token is answered without reading its user, and every way an account stops being usable
refuses the very next request: staff deactivating it in admin, deleteAccount, a save or delete of the row."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client

from apps.accounts.models import User
from tests.fixtures.api import PASSWORD

pytestmark = pytest.mark.django_db

ME = "{ me { id email } }"
DELETE_ACCOUNT = """
mutation ($password: String) { deleteAccount(password: $password) { __typename } }
"""


@pytest.fixture
def staff_client() -> Client:
    staff = User.objects.create_superuser(email="staff@example.com", password=PASSWORD)
    client = Client()
    client.force_login(staff)
    return client


def _signed_in(gql, sign_up, email: str = "me@example.com") -> tuple[str, User]:
    token = sign_up(email=email)["accessToken"]
    # The first request reads the user and keeps it: the cases below revoke a user this process knows.
    assert gql(ME, token=token)["data"]["me"]["email"] == email
    return token, User.objects.get(email=email)


def _refused(gql, token: str) -> bool:
    result = gql(ME, token=token)
    return result["data"] == {"me": None} and result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_a_known_token_is_answered_without_reading_the_user(gql, sign_up, django_assert_num_queries):
    token, _ = _signed_in(gql, sign_up)
    with django_assert_num_queries(0):
        assert gql(ME, token=token)["data"]["me"]["email"] == "me@example.com"


def test_staff_deactivating_the_user_in_admin_refuses_the_next_request(gql, sign_up, staff_client):
    token, user = _signed_in(gql, sign_up)
    form = {
        "email": user.email,
        "is_active": "",  # unchecked
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "devices-TOTAL_FORMS": "0",
        "devices-INITIAL_FORMS": "0",
        "devices-MIN_NUM_FORMS": "0",
        "devices-MAX_NUM_FORMS": "1000",
    }
    response = staff_client.post(f"/admin/accounts/user/{user.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    user.refresh_from_db()
    assert user.is_active is False
    assert _refused(gql, token)


def test_staff_may_not_delete_a_user_in_admin(gql, sign_up, staff_client):
    # The ledger keeps a user's entries, so admin refuses the delete; deleteAccount is the way out.
    token, user = _signed_in(gql, sign_up)
    response = staff_client.post(f"/admin/accounts/user/{user.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert gql(ME, token=token)["data"]["me"]["email"] == "me@example.com"


def test_a_deleted_user_row_refuses_the_next_request(gql, sign_up):
    first, first_user = _signed_in(gql, sign_up, "first@example.com")
    kept, _ = _signed_in(gql, sign_up, "kept@example.com")
    User.objects.filter(pk=first_user.pk).delete()  # a queryset delete still sends post_delete per row
    assert _refused(gql, first)
    assert gql(ME, token=kept)["data"]["me"]["email"] == "kept@example.com"


@pytest.mark.usefixtures("local_storage")
def test_delete_account_refuses_the_next_request(gql, sign_up):
    token, _ = _signed_in(gql, sign_up)
    assert gql(DELETE_ACCOUNT, {"password": PASSWORD}, token=token)["data"]["deleteAccount"] == {
        "__typename": "DeletePayload"
    }
    assert _refused(gql, token)


def test_a_user_saved_inactive_anywhere_is_refused_and_shown_again_when_reactivated(gql, sign_up):
    token, user = _signed_in(gql, sign_up)
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert _refused(gql, token)
    user.is_active = True
    user.email = "renamed@example.com"
    user.save(update_fields=["is_active", "email"])
    assert gql(ME, token=token)["data"]["me"]["email"] == "renamed@example.com"


def test_a_cache_that_lost_the_version_reads_the_user_again(gql, sign_up, django_assert_num_queries):
    token, _ = _signed_in(gql, sign_up)
    cache.clear()
    with django_assert_num_queries(1):
        assert gql(ME, token=token)["data"]["me"]["email"] == "me@example.com"
