"""Generated operations (hypothesis-graphql, from the committed SDL) against the real endpoint: whatever a
client sends, the answer is never a 5xx and never a masked "Unexpected error" (a bug). Schema-valid
operations with random arguments, signed in, exercise the resolvers' own checks; the purchase operations
get more examples because every one of their arguments is a string from a store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import call_command
from graphql import StringValueNode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import from_schema

SDL = (Path(__file__).resolve().parents[2] / "graphql_schema" / "schema.graphql").read_text()
# Arguments of custom scalars as AST literals (hypothesis-graphql's contract for custom scalars).
CUSTOM_SCALARS = {
    "DateTime": st.datetimes().map(lambda value: StringValueNode(value=value.isoformat() + "Z"))
}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: a CI failure reproduces locally
)
PURCHASES = ["verifyPurchase", "restorePurchases"]

pytestmark = pytest.mark.django_db


def _assert_handled(response) -> None:
    assert response.status_code < 500, response.content[:500]
    body = response.json()
    for error in body.get("errors") or []:
        assert "Unexpected error" not in error.get("message", ""), (error, body)


@pytest.fixture
def token(sign_up) -> str:
    call_command("load_products", verbosity=0)
    return sign_up()["accessToken"]


def _post(client, query: str, token: str | None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.post("/graphql", json.dumps({"query": query}), content_type="application/json", **headers)


@settings(FUZZ, max_examples=120)
@given(data=st.data())
def test_generated_purchase_mutations_never_fail_unexpectedly(client, token, data):
    query = data.draw(from_schema(SDL, fields=PURCHASES, custom_scalars=CUSTOM_SCALARS))
    _assert_handled(_post(client, query, token))


@settings(FUZZ, max_examples=250)
@given(data=st.data())
def test_generated_operations_never_fail_unexpectedly(client, token, data):
    query = data.draw(from_schema(SDL, custom_scalars=CUSTOM_SCALARS))
    _assert_handled(_post(client, query, token))
