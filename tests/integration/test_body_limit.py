"""Oversized request bodies are refused by the ASGI app before Django buffers them."""

import httpx
import pytest

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_an_oversized_graphql_body_is_refused_with_413_and_the_server_keeps_serving(asgi_server, settings):
    big = (
        '{"query": "{ me { email } }", "variables": {"pad": "'
        + "x" * (settings.MAX_REQUEST_BYTES + 10)
        + '"}}'
    )
    response = httpx.post(
        f"{asgi_server.url}/graphql", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    ok = httpx.post(f"{asgi_server.url}/graphql", json={"query": "{ me { email } }"})
    assert ok.status_code == 200 and ok.json() == {"data": {"me": None}}


def test_a_streamed_body_without_length_is_cut_off_at_the_limit(asgi_server, settings):
    def chunks():
        chunk = b"x" * 65536
        for _ in range(settings.MAX_REQUEST_BYTES // len(chunk) + 4):
            yield chunk

    response = httpx.post(
        f"{asgi_server.url}/graphql", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
