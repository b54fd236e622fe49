"""Generated requests against a live server (uvicorn in a thread, the real ASGI stack over HTTP): whatever a
client sends, the answer is never a 5xx, never an HTML page and never a masked "Unexpected error" (a bug,
`INTERNAL_SERVER_ERROR`).

- Operations: hypothesis-graphql builds documents from the committed SDL with random arguments (arbitrary
  strings for ids, cursors, tokens and slugs; any Int, negatives included), sent signed in, so every
  resolver's own checks run. The purchase operations get a share of their own: every argument of theirs is
  a string from a store.
- Broken operations: a generated document with its arguments moved into variables of the wrong type, or
  odd variables (huge strings, deep nesting, numbers beyond 64 bits, an unknown operation name).
- Broken envelopes: bodies that are not UTF-8, not JSON or not an object, other content types and
  methods, a GET with garbage parameters. Each must be a 4xx in GraphQL's error shape.

Sized for CI (a few hundred requests, well under two minutes); `FUZZ_EXAMPLES=5000` runs that many
requests in all for a soak run (split between the tests as below). Examples are derandomized: a failure in
CI reproduces locally with the same FUZZ_EXAMPLES.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
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
PURCHASES = ["verifyPurchase", "restorePurchases"]
# Requests in all; the tests below share them: operations 50%, purchases 20%, broken operations 15%,
# broken envelopes 15%.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))


def _fuzz(share: float):
    return settings(
        max_examples=max(int(EXAMPLES * share), 10),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same examples on every run: a CI failure reproduces locally
        database=None,
    )


# A soak run takes longer than the suite's per-test timeout (about 0.2 s a request on a busy CI machine).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(max(300, EXAMPLES))]


@pytest.fixture
def live(asgi_server, sign_up):
    """An HTTP client for the live server, and a signed-in user's token."""
    call_command("load_products", verbosity=0)
    token = sign_up()["accessToken"]
    with httpx.Client(base_url=asgi_server.url, timeout=60) as client:
        yield client, token


def _assert_handled(response: httpx.Response) -> None:
    sent = (response.request.method, response.request.url.query[:300], response.request.content[:1000])
    assert response.status_code < 500, (response.status_code, response.text[:500], sent)
    if response.status_code in (200, 400, 405, 413):
        # Every answer is GraphQL's JSON shape, errors included (never Django's HTML or plain text).
        body = response.json()
        assert isinstance(body, dict), (body, sent)
        for error in body.get("errors") or []:
            assert error.get("extensions", {}).get("code") != "INTERNAL_SERVER_ERROR", (error, sent)
            assert "Unexpected error" not in error.get("message", ""), (error, sent)
    else:
        assert response.status_code == 304, (response.status_code, response.text[:500], sent)


def _post(client: httpx.Client, token: str | None, body: dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/graphql", json=body, headers=headers)


@_fuzz(0.5)
@given(data=st.data())
def test_generated_operations_never_fail_unexpectedly(live, data):
    client, token = live
    query = data.draw(from_schema(SDL, custom_scalars=CUSTOM_SCALARS))
    signed_in = data.draw(st.sampled_from([True, True, True, False]))  # mostly signed in: resolvers run
    _assert_handled(_post(client, token if signed_in else None, {"query": query}))


@_fuzz(0.2)
@given(data=st.data())
def test_generated_purchase_mutations_never_fail_unexpectedly(live, data):
    client, token = live
    query = data.draw(from_schema(SDL, fields=PURCHASES, custom_scalars=CUSTOM_SCALARS))
    _assert_handled(_post(client, token, {"query": query}))


# --- Broken operations ------------------------------------------------------------------------------------

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "\x00", "-1", "null", "VGFyZ2V0OjE=", "Z2VuZXJhdGlvbjo=", "ÿ" * 3, "x" * 100_000])
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Deeper than any input type: nesting the parser and the coercion must refuse, not recurse into a crash.
DEEP = st.integers(min_value=50, max_value=500).map(lambda depth: json.loads("[" * depth + "]" * depth))
VARIABLES = st.dictionaries(st.sampled_from(["id", "input", "first", "after", "x"]), JSON_VALUES | DEEP)

# Operations whose arguments come from variables, so that a wrong type reaches variable coercion.
TYPED_OPERATIONS = [
    "query Q($id: ID!) { generation(id: $id) { id status } }",
    "query Q($id: ID!) { node(id: $id) { id } }",
    "query Q($id: ID!) { character(id: $id) { id photos { id status reasons } } }",
    "query Q($first: Int, $after: String) { trends(first: $first, after: $after) { edges { cursor } } }",
    "query Q($first: Int, $after: String) { generations(first: $first, after: $after) { edges { cursor } } }",
    "mutation M($input: GenerationInput!) { createGeneration(input: $input) { __typename } }",
    "query Q($input: GenerationInput!) { generationQuote(input: $input) { __typename } }",
    "mutation M($input: RequestUploadsInput!) { requestUploads(input: $input) { __typename } }",
    "mutation M($id: ID!) { deleteGeneration(id: $id) { __typename } }",
    "mutation M($input: SignInInput!) { signIn(input: $input) { __typename } }",
    "mutation M($x: String!) { refreshToken(refreshToken: $x) { __typename } }",
    "mutation M($x: String!) { signInWithFirebase(idToken: $x) { __typename } }",
]


@_fuzz(0.15)
@given(data=st.data())
def test_broken_operations_never_fail_unexpectedly(live, data):
    client, token = live
    body = {
        "query": data.draw(
            st.sampled_from(TYPED_OPERATIONS) | from_schema(SDL, custom_scalars=CUSTOM_SCALARS)
        ),
        "variables": data.draw(VARIABLES),
    }
    if data.draw(st.booleans()):
        body["operationName"] = data.draw(st.sampled_from(["Q", "M", "Nope", ""]) | JSON_LEAVES)
    _assert_handled(_post(client, token, body))


# --- Broken envelopes -------------------------------------------------------------------------------------

CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "application/graphql-response+json",
        "application/graphql",
        "text/plain",
        "",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "*/*",
    ]
)
BODIES = st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.text(max_size=200).map(str.encode),
    st.just(b'{"query": "{ me { email } }"}'),
    st.just(b'{"query": "{ me { \xff } }"}'),
    st.just(b'{"query": "{ __typename }", "extensions": {"persistedQuery": {"version": 1}}}'),
    st.just(b"\xef\xbb\xbf" + b'{"query": "{ __typename }"}'),  # a UTF-8 byte order mark
    # Deeper than Python's recursion limit (the client's json.dumps could not even write it).
    st.integers(min_value=900, max_value=100_000).map(
        lambda depth: (
            b'{"query": "query Q($x: [ID]) { __typename }", "variables": {"x": '
            + b"[" * depth
            + b"]" * depth
            + b"}}"
        )
    ),
)


@_fuzz(0.15)
@given(data=st.data())
def test_broken_envelopes_are_4xx_in_graphqls_error_shape(live, data):
    client, token = live
    headers = {
        "Accept": data.draw(st.sampled_from(["application/json", "application/graphql-response+json"]))
    }
    if data.draw(st.booleans()):
        headers["Authorization"] = data.draw(
            st.sampled_from([f"Bearer {token}", "Bearer x", "Basic e30=", "Bearer"])
        )
    method = data.draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH"]))
    if method == "GET":
        params = data.draw(
            st.dictionaries(
                st.sampled_from(["query", "variables", "extensions", "operationName"]), st.text(max_size=60)
            )
        )
        response = client.get("/graphql", params=params, headers=headers)
    else:
        headers["Content-Type"] = data.draw(CONTENT_TYPES)
        response = client.request(method, "/graphql", content=data.draw(BODIES), headers=headers)
    _assert_handled(response)
