"""The HTTP transport of /graphql and the health endpoints: methods, bodies, CORS, request ids.

The full GraphQL-over-HTTP conformance run (graphql-http's audit against a live server) is in
tests/integration/test_graphql_http_audit.py; these are the rules the project chose on top of it.
"""

import json
import re

import pytest

from apps.accounts.models import User
from tests.fixtures.api import PASSWORD, SIGN_UP

pytestmark = pytest.mark.django_db

ME = "{ me { email } }"
ORIGIN = "https://app.example.com"


def _post_json(client, body, **extra):
    return client.post("/graphql", json.dumps(body), content_type="application/json", **extra)


def test_batching_is_off_and_an_array_body_runs_nothing(client):
    batch = [
        {"query": SIGN_UP, "variables": {"email": "a@example.com", "password": PASSWORD}},
        {"query": SIGN_UP, "variables": {"email": "b@example.com", "password": PASSWORD}},
    ]
    response = _post_json(client, batch)
    assert response.status_code == 400
    assert response.json() == {
        "errors": [{"message": "Batching is not enabled", "extensions": {"code": "BAD_REQUEST"}}]
    }
    assert User.objects.count() == 0


def test_a_mutation_over_get_is_refused_with_405_and_runs_nothing(client):
    mutation = 'mutation { signUp(input: {email: "get@example.com", password: "%s"}) { __typename } }'
    response = client.get("/graphql", {"query": mutation % PASSWORD})
    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"
    assert User.objects.count() == 0


def test_a_query_over_get_works_with_variables_and_a_token(client, sign_up):
    auth = sign_up(email="getter@example.com")
    response = client.get(
        "/graphql",
        {"query": "query Me($x: Boolean!) { me @include(if: $x) { email } }", "variables": '{"x": true}'},
        HTTP_AUTHORIZATION=f"Bearer {auth['accessToken']}",
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"me": {"email": "getter@example.com"}}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b'{"query": "{ me { email } }"', "Unable to parse request body as JSON", id="not-json"),
        pytest.param(b'{"query": "{ me { \xff } }"}', "The request body is not valid UTF-8.", id="not-utf8"),
        pytest.param(b"\xff\xfe\x00", "The request body is not valid UTF-8.", id="binary"),
        pytest.param(
            b'"{ me { email } }"', 'The request body must be a JSON object: {"query": "..."}.', id="str"
        ),
        pytest.param(b"null", 'The request body must be a JSON object: {"query": "..."}.', id="null"),
        pytest.param(b"5", 'The request body must be a JSON object: {"query": "..."}.', id="number"),
        pytest.param(
            b'{"query": "{ me { email } }", "variables": []}',
            "The GraphQL operation's `variables` must be an object or null, if provided.",
            id="variables-array",
        ),
        pytest.param(
            b'{"query": "{ me { email } }", "operationName": {}}',
            "operationName must be a string or null.",
            id="operation-name-object",
        ),
        pytest.param(
            b'{"query": "{ me { email } }", "operationName": ["a"]}',
            "operationName must be a string or null.",
            id="operation-name-array",
        ),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400_in_graphqls_error_shape(client, body, message):
    response = client.post("/graphql", body, content_type="application/json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"errors": [{"message": message, "extensions": {"code": "BAD_REQUEST"}}]}


@pytest.mark.parametrize(
    "content_type", ["", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_a_body_without_a_json_content_type_is_refused(client, content_type):
    response = client.generic("POST", "/graphql", json.dumps({"query": ME}), content_type=content_type)
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"] == {"code": "BAD_REQUEST"}
    assert "data" not in response.json()


def test_other_methods_are_405(client):
    response = client.put("/graphql", json.dumps({"query": ME}), content_type="application/json")
    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"
    assert response.json()["errors"][0]["extensions"] == {"code": "METHOD_NOT_ALLOWED"}


# --- CORS ----------------------------------------------------------------------------------------------


def _preflight(client, origin: str):
    return client.options(
        "/graphql",
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )


def test_cors_preflight_is_answered_for_an_allowed_origin(client, settings):
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]
    response = _preflight(client, ORIGIN)
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert response["Vary"] == "Origin"
    assert response["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    allowed_headers = {h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-request-id"} <= allowed_headers

    actual = _post_json(client, {"query": ME}, HTTP_ORIGIN=ORIGIN)
    assert actual.status_code == 200
    assert actual["Access-Control-Allow-Origin"] == ORIGIN


@pytest.mark.parametrize("allowed", [[], [ORIGIN]], ids=["no-origins-configured", "other-origin"])
def test_cors_is_not_granted_to_other_origins(client, settings, allowed):
    settings.CORS_ALLOWED_ORIGINS = allowed
    evil = "https://evil.example.net"
    response = _preflight(client, evil)
    assert response.status_code != 204
    assert "Access-Control-Allow-Origin" not in response
    assert "Access-Control-Allow-Methods" not in response
    actual = _post_json(client, {"query": ME}, HTTP_ORIGIN=evil)
    assert "Access-Control-Allow-Origin" not in actual


# --- Request ids -----------------------------------------------------------------------------------------


def test_a_well_formed_request_id_is_echoed(client):
    response = _post_json(client, {"query": ME}, HTTP_X_REQUEST_ID="ios-7f3a.b_2-x")
    assert response["X-Request-ID"] == "ios-7f3a.b_2-x"


@pytest.mark.parametrize("given", [None, "has spaces and ; semicolons", "x" * 65, "line\nbreak"])
def test_a_missing_or_malformed_request_id_is_replaced_by_a_fresh_one(client, given):
    extra = {"HTTP_X_REQUEST_ID": given} if given is not None else {}
    first = _post_json(client, {"query": ME}, **extra)["X-Request-ID"]
    second = _post_json(client, {"query": ME}, **extra)["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_health_endpoints_carry_the_request_id_too(client):
    assert client.get("/healthz", HTTP_X_REQUEST_ID="probe-1")["X-Request-ID"] == "probe-1"


# --- Health --------------------------------------------------------------------------------------------


def test_healthz_says_the_process_is_alive(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.services
def test_readyz_checks_database_broker_and_storage(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "storage": "ok"},
    }


@pytest.mark.services
def test_readyz_is_503_and_names_the_check_when_redis_does_not_answer(client, monkeypatch):
    import dramatiq
    import redis

    def refuse():
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(dramatiq.get_broker().client, "ping", refuse)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "broker": "unavailable", "storage": "ok"},
    }


def test_graphql_over_asgi_skips_the_middleware_a_bearer_api_does_not_need(asgi_server, settings):
    """/graphql is served by the lean handler (backend/asgi.py): request id, CORS and security headers,
    but none of the session, CSRF, auth, messages or clickjacking middleware the rest of the site has."""
    import httpx

    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]
    with httpx.Client(base_url=asgi_server.url, timeout=30) as http:
        graphql = http.post("/graphql", json={"query": ME}, headers={"Origin": ORIGIN, "X-Request-ID": "r-1"})
        assert graphql.status_code == 200
        assert graphql.json() == {"data": {"me": None}}
        assert graphql.headers["x-request-id"] == "r-1"
        assert graphql.headers["access-control-allow-origin"] == ORIGIN
        assert graphql.headers["x-content-type-options"] == "nosniff"
        assert "x-frame-options" not in graphql.headers
        # The rest of the site keeps the whole stack.
        health = http.get("/healthz")
        assert health.headers["x-frame-options"] == "DENY"
        assert "x-request-id" in health.headers


def test_graphql_response_json_is_served_to_clients_that_prefer_it(client):
    accept = {"HTTP_ACCEPT": "application/graphql-response+json, application/json;q=0.9"}
    ok = _post_json(client, {"query": ME}, **accept)
    assert ok.status_code == 200
    assert ok["Content-Type"] == "application/graphql-response+json; charset=utf-8"
    assert ok.json() == {"data": {"me": None}}
    # A document that does not validate is a request error: 400, and no `data` entry.
    invalid = _post_json(client, {"query": "{ me { noSuchField } }"}, **accept)
    assert invalid.status_code == 400
    body = invalid.json()
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_legacy_clients_keep_application_json_and_200(client, accept):
    extra = {"HTTP_ACCEPT": accept} if accept else {}
    invalid = _post_json(client, {"query": "{ me { noSuchField } }"}, **extra)
    assert invalid.status_code == 200
    assert invalid["Content-Type"] == "application/json"
    assert invalid.json()["data"] is None
