"""`/metrics` on the server: Prometheus' text format, and with METRICS_TOKEN only for the bearer of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[3]
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


# A process that counts one `me` query and one open websocket, then waits for its stdin to close.
_ONE_PROCESS = (
    "import sys; from apps.core.metrics import GRAPHQL_OPERATIONS, WEBSOCKETS;"
    "GRAPHQL_OPERATIONS.labels(operation='me', type='query').inc(); WEBSOCKETS.inc();"
    "print('counted', flush=True); sys.stdin.read()"
)


@override_settings(METRICS_TOKEN="")
def test_metrics_sum_every_process_and_forget_the_open_websockets_of_one_that_ended(
    client, monkeypatch, tmp_path
):
    """Several server processes (`serve --web-processes N`) share PROMETHEUS_MULTIPROC_DIR: a scrape of any
    one sums them all; a process that ended (no hook told prometheus-client) keeps its counts, not its
    sockets."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _ONE_PROCESS],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for process in processes:
            assert process.stdout.readline() == "counted\n"
        ended, running = processes
        ended.communicate(timeout=30)

        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(client.get("/metrics").content.decode())
            for sample in family.samples
        }
        assert samples[("websocket_connections", ())] == 1
        assert samples[("graphql_operations_total", (("operation", "me"), ("type", "query")))] == 2
        assert not list(tmp_path.glob(f"gauge_live*_{ended.pid}.db"))
        assert list(tmp_path.glob(f"gauge_live*_{running.pid}.db"))
    finally:
        for process in processes:
            process.kill()
            process.wait()
