"""A cursor that is not one of ours is the client's mistake (VALIDATION), not a masked server bug (the
API fuzz test found `trends(after: "")` answered "Unexpected error")."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ('{ trends(after: "AA==") { edges { cursor } } }', "cursors from an earlier page"),
        ("{ trends(first: -1) { edges { cursor } } }", "'first' must be a non-negative integer"),
    ],
)
def test_a_bad_cursor_or_page_size_of_trends_is_a_validation_error(gql, query, says):
    error = gql(query)["errors"][0]
    assert error["extensions"]["code"] == "VALIDATION" and says in error["message"]


def test_a_bad_cursor_of_generations_is_a_validation_error(gql, sign_up):
    token = sign_up()["accessToken"]
    error = gql('{ generations(after: "AA==") { edges { cursor } } }', token=token)["errors"][0]
    assert error["extensions"]["code"] == "VALIDATION"
