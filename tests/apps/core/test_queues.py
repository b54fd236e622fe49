"""Queue names live in one place, every Django actor runs on a Django queue, and the backend worker is
started with an explicit queue list (so it never takes a GPU job; see tests/integration/test_worker_process.py
for the real process)."""

from __future__ import annotations

import dramatiq
import pytest
from django.conf import settings
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.cli import make_argument_parser

from apps.core.queues import DJANGO_QUEUES, QUEUE_DEFAULT
from backend import worker
from backend.broker import DjangoDbConnectionsMiddleware, build_broker
from gpu_worker import contract


def test_django_queues_are_distinct_and_never_a_gpu_lane():
    assert len(set(DJANGO_QUEUES)) == len(DJANGO_QUEUES)
    assert set(DJANGO_QUEUES).isdisjoint(contract.GPU_QUEUES)
    # Job events come back from the GPU workers on a queue the Django workers consume.
    assert contract.QUEUE_JOB_EVENTS in DJANGO_QUEUES


def test_every_declared_actor_runs_on_a_django_queue():
    broker = dramatiq.get_broker()
    actors = {name: broker.get_actor(name).queue_name for name in broker.get_declared_actors()}
    assert actors["credits_grant_task"] == QUEUE_DEFAULT
    strays = {name: queue for name, queue in actors.items() if queue not in DJANGO_QUEUES}
    assert strays == {}, "an actor on a queue no Django worker consumes (or on a GPU lane)"


def test_backend_worker_hands_dramatiq_an_explicit_queue_list(monkeypatch):
    seen: dict = {}

    def fake_dramatiq_main() -> int:
        import sys

        seen["args"] = make_argument_parser().parse_args(sys.argv[1:])
        return 0

    monkeypatch.setattr("dramatiq.cli.main", fake_dramatiq_main)
    monkeypatch.setattr("sys.argv", ["backend.worker"])
    monkeypatch.setenv("DRAMATIQ_WORKER_THREADS", "3")
    assert worker.main() == 0
    args = seen["args"]
    assert args.broker == "backend.worker_boot"
    assert args.modules == []
    assert args.queues == list(DJANGO_QUEUES)
    assert (args.processes, args.threads) == (1, 3)


def test_the_configured_broker_follows_the_settings():
    broker = dramatiq.get_broker()
    expected = RedisBroker if settings.REDIS_URL else StubBroker
    assert ("redis" if settings.REDIS_URL else "stub") == settings.DRAMATIQ_BROKER
    assert isinstance(broker, expected)
    assert sum(isinstance(m, DjangoDbConnectionsMiddleware) for m in broker.middleware) == 1


def test_an_unknown_broker_kind_is_refused():
    with pytest.raises(ValueError, match="rabbitmq"):
        build_broker("rabbitmq")


@pytest.mark.services
def test_idle_backend_workers_poll_job_events_sooner_than_the_other_queues(settings):
    # Dramatiq's Redis consumers back off up to the worker timeout (1 s) while idle; progress events from
    # the GPU workers must not wait that long (bench/generations_services.py measures emit -> websocket).
    import os

    settings.JOB_EVENTS_POLL_MS = 20
    broker = build_broker("redis", os.environ["REDIS_URL"])
    try:
        events = broker.consume(contract.QUEUE_JOB_EVENTS, prefetch=1, timeout=1000)
        default = broker.consume(QUEUE_DEFAULT, prefetch=1, timeout=1000)
        assert (events.timeout, default.timeout) == (20, 1000)
    finally:
        broker.close()
