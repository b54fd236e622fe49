"""A backend worker process serves its metrics on WORKER_METRICS_PORT, here in prometheus-client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, what several processes per host use): the message it ran is
counted by actor and outcome, and timed."""

from __future__ import annotations

import uuid

import httpx
import pytest
from django.db import connection, transaction
from prometheus_client.parser import text_string_to_metric_families

from apps.accounts.models import User
from apps.credits.models import Wallet
from apps.credits.tasks import credits_schedule_grant
from tests.fixtures.live import free_port
from tests.integration.test_worker_process import WORKER, WorkerProcess

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _done_by_actor(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        sample.labels["actor"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "dramatiq_messages_total" and sample.labels.get("outcome") == "done"
    }


def test_a_backend_worker_serves_its_message_counts_on_its_metrics_port(monkeypatch, tmp_path):
    port = free_port()
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    monkeypatch.setenv("WORKER_METRICS_PORT", str(port))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(multiproc))
    worker = WorkerProcess(WORKER, tmp_path / "worker.log")
    try:
        user = User.objects.create_user(f"m{uuid.uuid4().hex[:8]}@example.com", "a-long-test-password-42")
        with transaction.atomic():
            credits_schedule_grant(user=user, amount=3, reason="promo", reference=f"promo:{user.pk}")
        worker.wait_for(lambda: Wallet.objects.filter(user=user, balance=3).exists(), what="the grant")
        worker.wait_for(
            lambda: _done_by_actor(port).get("credits_grant_task", 0) >= 1, what="the grant counted"
        )
        assert any(files.name.startswith("counter_") for files in multiproc.iterdir())  # multiprocess files
    finally:
        worker.terminate()
        connection.close()
