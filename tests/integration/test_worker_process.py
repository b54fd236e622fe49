"""`python -m backend.worker` as a real process: it runs Django's queues and never takes a GPU job.

Dramatiq consumes the queues that are both declared in the process and in `--queues`. The second test
declares the GPU lanes in the worker process first (as a producer-side actor stub for a GPU job would),
so it fails if the worker's explicit queue list is dropped or widened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import dramatiq
import pytest
from django.db import connection, transaction
from dramatiq.brokers.redis import RedisBroker

from apps.accounts.models import User
from apps.core.queues import DJANGO_QUEUES
from apps.credits.models import CreditEntry, Wallet
from apps.credits.tasks import credits_schedule_grant
from gpu_worker.contract import ACTOR_RUN_GENERATION, GPU_QUEUES, QUEUE_GPU_INSTANT

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


WORKER = [sys.executable, "-m", "backend.worker"]
# The same entry point, in a process where the GPU lanes are declared on the broker before it starts.
WORKER_WITH_GPU_LANES_DECLARED = [
    sys.executable,
    "-c",
    "import sys; from backend.worker import main, setup; setup(); import dramatiq; "
    "from gpu_worker.contract import GPU_QUEUES; "
    "[dramatiq.get_broker().declare_queue(queue) for queue in GPU_QUEUES]; sys.exit(main())",
]


class WorkerProcess:
    def __init__(self, command: list[str], log_path: Path) -> None:
        # The subprocess must use the test database that pytest-django created, not the configured one.
        database_url = urlsplit(os.environ["DATABASE_URL"])._replace(
            path="/" + connection.settings_dict["NAME"]
        )
        env = {
            **os.environ,
            "DATABASE_URL": database_url.geturl(),
            "REDIS_URL": os.environ["REDIS_URL"],
            "DJANGO_SETTINGS_MODULE": "backend.settings",
            "DRAMATIQ_WORKER_THREADS": "2",
            "PYTHONUNBUFFERED": "1",
        }
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, condition, *, timeout: float = 60, what: str = "the condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited ({self.process.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; worker log:\n{self.log()}")
            time.sleep(0.2)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, as a process manager would send; the worker finishes its messages and exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:  # did not stop in time: do not leave it behind
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            self._log.close()


@pytest.fixture(params=[WORKER, WORKER_WITH_GPU_LANES_DECLARED], ids=["as-deployed", "gpu-lanes-declared"])
def worker_process(request, tmp_path) -> Iterator[WorkerProcess]:
    broker = dramatiq.get_broker()
    assert isinstance(broker, RedisBroker)
    queues = {*DJANGO_QUEUES, *GPU_QUEUES}
    for queue in queues:
        broker.flush(queue)
    worker = WorkerProcess(request.param, tmp_path / "worker.log")
    yield worker
    worker.terminate()
    connection.close()  # the test's own connection; the worker's are gone with it
    for queue in queues:
        broker.flush(queue)


def _gpu_messages() -> dict[str, list[str]]:
    broker = dramatiq.get_broker()
    client, key = broker.client, f"{broker.namespace}:{QUEUE_GPU_INSTANT}"
    return {
        "waiting": [m.decode() for m in client.lrange(key, 0, -1)],
        "stored": [m.decode() for m in client.hkeys(f"{key}.msgs")],
        "dead": [m.decode() for m in client.hkeys(f"{key}.XQ.msgs")],
        "fetched": [k.decode() for k in client.keys(f"{broker.namespace}:__acks__.*.{QUEUE_GPU_INSTANT}")],
    }


def test_backend_worker_runs_django_queues_and_leaves_gpu_jobs_waiting(worker_process):
    broker = dramatiq.get_broker()
    user = User.objects.create_user(f"w{uuid.uuid4().hex[:8]}@example.com", "a-long-test-password-42")

    # A GPU job first, so a worker that consumed GPU lanes would have fetched it before the grant.
    gpu_job = broker.enqueue(
        dramatiq.Message(
            queue_name=QUEUE_GPU_INSTANT,
            actor_name=ACTOR_RUN_GENERATION,
            args=(),
            kwargs={"job": {"generation_id": str(uuid.uuid4())}},
            options={},
        )
    )
    redis_id = gpu_job.options["redis_message_id"]
    with transaction.atomic():
        credits_schedule_grant(user=user, amount=9, reason="promo", reference=f"promo:{user.pk}")

    worker_process.wait_for(
        lambda: Wallet.objects.filter(user=user, balance=9).exists(), what="the grant to be applied"
    )
    assert list(CreditEntry.objects.filter(wallet__user=user).values_list("kind", "amount", "reference")) == [
        ("grant", 9, f"promo:{user.pk}")
    ]
    broker.join(DJANGO_QUEUES[0], timeout=20_000)  # acked: the worker is done with it
    # The GPU job is still waiting, exactly as it was enqueued: never fetched, never dead-lettered.
    untouched = {"waiting": [redis_id], "stored": [redis_id], "dead": [], "fetched": []}
    assert _gpu_messages() == untouched
    stored = broker.client.hget(f"{broker.namespace}:{QUEUE_GPU_INSTANT}.msgs", redis_id)
    assert dramatiq.Message.decode(stored) == gpu_job

    assert worker_process.terminate() == 0, worker_process.log()
    assert _gpu_messages() == untouched
    assert "Worker process is ready for action." in worker_process.log()
