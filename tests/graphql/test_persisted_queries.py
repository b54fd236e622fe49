"""Apollo's automatic persisted queries on /graphql: register by hash, run by hash (POST and GET), the
typed errors, and the HTTP caching of a GET answered by hash (Cache-Control, ETag, 304)."""

import hashlib
import json

import httpx
import pytest

from apps.accounts.models import User
from graphql_schema.views import APQ_CACHE_PREFIX
from tests.fixtures.api import PASSWORD, SIGN_UP

pytestmark = pytest.mark.django_db

ME = "{ me { email } }"
NOT_FOUND = {
    "errors": [{"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}]
}


def sha(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


def ext(query: str, version: int = 1) -> dict:
    return {"persistedQuery": {"version": version, "sha256Hash": sha(query)}}


def post(client, body: dict, token: str | None = None, **extra):
    if token:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.post("/graphql", json.dumps(body), content_type="application/json", **extra)


def get(client, extensions: dict, variables: dict | None = None, token: str | None = None, **extra):
    params = {"extensions": json.dumps(extensions)}
    if variables is not None:
        params["variables"] = json.dumps(variables)
    if token:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.get("/graphql", params, **extra)


def test_an_unknown_hash_is_persisted_query_not_found_with_200(client):
    response = post(client, {"extensions": ext(ME)})
    assert response.status_code == 200
    assert response.json() == NOT_FOUND
    response = get(client, ext(ME))
    assert response.status_code == 200
    assert response.json() == NOT_FOUND
    assert response["Cache-Control"] == "no-store"
    assert "ETag" not in response


def test_register_then_run_by_hash_over_post_and_get(client, sign_up):
    auth = sign_up(email="apq@example.com")
    token = auth["accessToken"]
    query = "query Me($x: Boolean!) { me @include(if: $x) { email } }"
    expected = {"data": {"me": {"email": "apq@example.com"}}}

    registered = post(client, {"query": query, "variables": {"x": True}, "extensions": ext(query)}, token)
    assert registered.status_code == 200
    assert registered.json() == expected

    by_hash = post(client, {"variables": {"x": True}, "extensions": ext(query)}, token)
    assert by_hash.json() == expected
    by_get = get(client, ext(query), {"x": True}, token)
    assert by_get.status_code == 200
    assert by_get.json() == expected


def test_a_query_registered_over_get_runs_by_hash(client):
    response = client.get("/graphql", {"query": ME, "extensions": json.dumps(ext(ME))})
    assert response.json() == {"data": {"me": None}}
    assert get(client, ext(ME)).json() == {"data": {"me": None}}


def test_a_hash_that_does_not_match_the_query_is_400_and_stores_nothing(client):
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": sha("{ __typename }")}}
    response = post(client, {"query": ME, "extensions": extensions})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"] == {"code": "PERSISTED_QUERY_HASH_MISMATCH"}
    assert post(client, {"extensions": extensions}).json() == NOT_FOUND
    malformed = post(
        client, {"query": ME, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "x"}}}
    )
    assert malformed.status_code == 400
    assert malformed.json()["errors"][0]["extensions"] == {"code": "PERSISTED_QUERY_HASH_MISMATCH"}


@pytest.mark.parametrize("persisted", [{"version": 2, "sha256Hash": sha(ME)}, {"sha256Hash": sha(ME)}, "x"])
def test_an_unsupported_version_is_400(client, persisted):
    response = post(client, {"query": ME, "extensions": {"persistedQuery": persisted}})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"] == {"code": "PERSISTED_QUERY_NOT_SUPPORTED"}


def test_a_mutation_by_hash_over_get_is_405_and_runs_nothing(client):
    variables = {"email": "apq-get@example.com", "password": PASSWORD}
    # Registering a mutation over GET is refused before it is stored.
    response = client.get(
        "/graphql",
        {"query": SIGN_UP, "variables": json.dumps(variables), "extensions": json.dumps(ext(SIGN_UP))},
    )
    assert response.status_code == 405
    assert get(client, ext(SIGN_UP), variables).json() == NOT_FOUND
    # Registered over POST (which runs it), a mutation by hash over GET is still 405.
    registered = post(client, {"query": SIGN_UP, "variables": variables, "extensions": ext(SIGN_UP)})
    assert registered.json()["data"]["signUp"]["__typename"] == "AuthPayload"
    other = {"email": "apq-get-2@example.com", "password": PASSWORD}
    response = get(client, ext(SIGN_UP), other)
    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"
    assert not User.objects.filter(email="apq-get-2@example.com").exists()


def test_get_by_hash_has_an_etag_and_answers_304_on_if_none_match(client, settings):
    post(client, {"query": ME, "extensions": ext(ME)})
    first = get(client, ext(ME))
    assert first.status_code == 200
    etag = first["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert first["Cache-Control"] == f"public, max-age={settings.GRAPHQL_APQ_PUBLIC_MAX_AGE}"
    assert "Authorization" in first["Vary"]

    again = get(client, ext(ME), HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == etag
    assert get(client, ext(ME), HTTP_IF_NONE_MATCH=f'W/{etag}, "other"').status_code == 304
    assert get(client, ext(ME), HTTP_IF_NONE_MATCH='"other"').status_code == 200


def test_a_signed_in_get_is_private_and_its_etag_follows_the_body(client, sign_up):
    token_a = sign_up(email="a-apq@example.com")["accessToken"]
    token_b = sign_up(email="b-apq@example.com")["accessToken"]
    post(client, {"query": ME, "extensions": ext(ME)})
    a = get(client, ext(ME), token=token_a)
    b = get(client, ext(ME), token=token_b)
    assert a["Cache-Control"] == b["Cache-Control"] == "private, max-age=0, must-revalidate"
    assert a["ETag"] != b["ETag"]
    assert get(client, ext(ME), token=token_b, HTTP_IF_NONE_MATCH=a["ETag"]).status_code == 200
    assert get(client, ext(ME), token=token_a, HTTP_IF_NONE_MATCH=a["ETag"]).status_code == 304


def test_post_responses_carry_no_http_caching(client):
    response = post(client, {"query": ME, "extensions": ext(ME)})
    assert "ETag" not in response
    assert "public" not in response.get("Cache-Control", "")


def test_a_document_over_the_limits_is_refused_and_never_stored(client, settings):
    settings.GRAPHQL_MAX_DEPTH = 0
    deep = "{ me { email } }"  # depth 1
    response = post(client, {"query": deep, "extensions": ext(deep)})
    assert response.json()["errors"][0]["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}
    assert post(client, {"extensions": ext(deep)}).json() == NOT_FOUND

    limit = settings.GRAPHQL_MAX_TOKENS
    too_many = "{ me { " + "...F " * limit + "} } fragment F on User { email }"
    response = post(client, {"query": too_many, "extensions": ext(too_many)})
    assert response.json()["errors"][0]["extensions"] == {"code": "GRAPHQL_PARSE_FAILED"}
    assert post(client, {"extensions": ext(too_many)}).json() == NOT_FOUND


def test_a_stored_document_still_passes_the_limits_when_run_by_hash(client, settings):
    from django.core.cache import cache

    # A document stored while the limits were looser is checked again on every run.
    post(client, {"query": ME, "extensions": ext(ME)})
    assert cache.get(APQ_CACHE_PREFIX + sha(ME)) == ME
    settings.GRAPHQL_MAX_DEPTH = 0
    response = post(client, {"extensions": ext(ME)})
    assert response.json()["errors"][0]["message"] == "'anonymous' exceeds maximum operation depth of 0"


def test_a_document_larger_than_max_request_bytes_is_not_stored(client, settings):
    settings.MAX_REQUEST_BYTES = 10
    response = client.get("/graphql", {"query": ME, "extensions": json.dumps(ext(ME))})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"] == {"code": "PERSISTED_QUERY_TOO_LARGE"}


def test_persisted_queries_through_the_live_asgi_server(asgi_server):
    url = f"{asgi_server.url}/graphql"
    with httpx.Client(timeout=30) as http:
        missing = http.post(url, json={"extensions": ext(ME)})
        assert missing.status_code == 200
        assert missing.json() == NOT_FOUND
        registered = http.post(url, json={"query": ME, "extensions": ext(ME)})
        assert registered.json() == {"data": {"me": None}}
        # httpx sends `Accept: */*`: a GET by hash has no `query` and still gets JSON, not GraphiQL.
        by_get = http.get(url, params={"extensions": json.dumps(ext(ME))})
        assert by_get.status_code == 200
        assert by_get.json() == {"data": {"me": None}}
        assert by_get.headers["cache-control"].startswith("public")
        again = http.get(
            url, params={"extensions": json.dumps(ext(ME))}, headers={"If-None-Match": by_get.headers["etag"]}
        )
        assert again.status_code == 304
