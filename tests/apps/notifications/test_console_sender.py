"""The console sender: the embedded mode's default, which logs each push and records it as sent."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from apps.notifications.services import push_notify_generation_finished
from apps.notifications.tasks import push_deliver_task
from tests.fixtures.factories import make_device, make_user

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.django_db
def test_the_console_sender_logs_the_push_and_marks_it_sent(settings, caplog, google):
    settings.PUSH_BACKEND = "console"
    user = make_user()
    device = make_device(user, platform="ANDROID", locale="it-IT")
    (push,) = push_notify_generation_finished(
        user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="Neon Drift"
    )

    with caplog.at_level(logging.INFO, logger="apps.notifications"):
        push_deliver_task(push_id=str(push.id))
        push_deliver_task(push_id=str(push.id))  # a redelivery logs nothing more

    push.refresh_from_db()
    assert (push.status, push.attempts, push.provider_message_id) == ("SENT", 1, f"console:{push.id}")
    assert push.sent_at is not None
    (record,) = [r for r in caplog.records if r.name == "apps.notifications.senders"]
    line = record.getMessage()
    assert f"push {push.id} GENERATION_SUCCEEDED to ANDROID device {device.pk} [it]" in line
    assert "Il tuo video è pronto | «Neon Drift» è pronto da guardare." in line
    assert device.token not in line
    assert google.calls == []  # nothing went to Google


EMBEDDED_RUN = """
import json, time, uuid
import django
django.setup()
from django.conf import settings
from django.core.management import call_command
from django.db import transaction

call_command("migrate", verbosity=0)
from apps.accounts.models import User
from apps.accounts.services import device_register
from apps.notifications.models import PushMessage
from apps.notifications.services import push_notify_generation_finished
from backend.embedded import start_embedded_worker, stop_embedded_worker

user = User.objects.create_user("embedded@example.com", "a-long-test-password-42")
device_register(user=user, token="embedded-secret-token", platform="IOS", app_version="1.0", locale="es")
start_embedded_worker()
with transaction.atomic():
    (push,) = push_notify_generation_finished(
        user=user, generation_id=uuid.uuid4(), succeeded=True, trend_title="Neon Drift"
    )
deadline = time.monotonic() + 30
while PushMessage.objects.get(pk=push.pk).status != "SENT" and time.monotonic() < deadline:
    time.sleep(0.05)
push.refresh_from_db()
stop_embedded_worker()
print("RESULT " + json.dumps({
    "broker": settings.DRAMATIQ_BROKER, "push_backend": settings.PUSH_BACKEND, "id": str(push.id),
    "status": push.status, "attempts": push.attempts, "provider_message_id": push.provider_message_id,
}))
"""


def test_the_embedded_mode_delivers_pushes_with_the_console_sender(tmp_path):
    """`make run`'s mode in a process of its own: SQLite, the in-process broker and worker, no Firebase."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "PUSH_BACKEND"} and not key.startswith("FIREBASE_")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="backend.settings",
        VAR_DIR=str(tmp_path),
        TRENDS_SCHEDULER_ENABLED="0",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    run = subprocess.run(
        [sys.executable, "-c", EMBEDDED_RUN], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr[-4000:]
    (result_line,) = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(result_line.removeprefix("RESULT "))
    assert result["broker"] == "stub" and result["push_backend"] == "console"
    assert (result["status"], result["attempts"]) == ("SENT", 1)
    assert result["provider_message_id"] == f"console:{result['id']}"
    logged = [line for line in run.stderr.splitlines() if f"push {result['id']} " in line]
    assert len(logged) == 1, run.stderr[-4000:]
    assert "GENERATION_SUCCEEDED to IOS" in logged[0] and "Tu vídeo está listo" in logged[0]
    assert "embedded-secret-token" not in run.stderr + run.stdout
