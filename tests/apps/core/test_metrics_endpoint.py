"""`/metrics` on the server: Prometheus' text format, and with METRICS_TOKEN only for the bearer of it."""

from __future__ import annotations

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "a-scraper-token-of-more-than-32-characters"


def _families(response) -> set[str]:
    return {family.name for family in text_string_to_metric_families(response.content.decode())}


@override_settings(METRICS_TOKEN="")
def test_metrics_are_open_without_a_token_outside_production(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert {
        "graphql_operations",
        "graphql_errors",
        "dramatiq_messages",
        "websocket_connections",
    } <= _families(response)


@override_settings(METRICS_TOKEN=TOKEN)
@pytest.mark.parametrize("header", [None, "Bearer wrong", TOKEN, f"Basic {TOKEN}"])
def test_metrics_refuse_a_scrape_without_the_bearer_token(client, header):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get("/metrics", **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"graphql" not in response.content


@override_settings(METRICS_TOKEN=TOKEN)
def test_metrics_answer_the_bearer_of_the_token(client):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert "graphql_operations" in _families(response)
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405
