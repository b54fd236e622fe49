"""The periodic job scheduler: each job (rotation, Soul ID purge, generations' retention purge, generation
reaper, purchase acknowledgements, lost webhook deliveries) once per its interval."""

from __future__ import annotations

import dramatiq
import pytest

from apps.characters.tasks import characters_purge_task
from apps.core.queues import QUEUE_MAINTENANCE
from apps.generations.tasks import generations_purge_task
from apps.jobs.tasks import jobs_reap_task
from apps.organizations.tasks import webhooks_resend_lost_task
from apps.purchases.tasks import purchases_acknowledge_sweep_task
from apps.trends import scheduler
from apps.trends.tasks import trends_rotate_task

START = 1_800_000_000.0 - 1_800_000_000.0 % 86_400  # a boundary of every interval below


@pytest.fixture
def queue():
    broker = dramatiq.get_broker()
    broker.declare_queue(QUEUE_MAINTENANCE)
    broker.flush(QUEUE_MAINTENANCE)
    yield
    broker.flush(QUEUE_MAINTENANCE)


def enqueued() -> list[str]:
    """The actor names of the maintenance messages waiting, in order."""
    broker = dramatiq.get_broker()
    if hasattr(broker, "do_qsize"):  # Redis: read the messages without consuming them
        consumer = broker.consume(QUEUE_MAINTENANCE, prefetch=100, timeout=100)
        names = []
        try:
            for message in consumer:
                if message is None:
                    break
                names.append(message.actor_name)
                consumer.nack(message)  # back to the dead-letter set: not requeued, gone from the queue
        finally:
            consumer.close()
        return names
    messages = list(broker.queues[QUEUE_MAINTENANCE].queue) if QUEUE_MAINTENANCE in broker.queues else []
    return [dramatiq.Message.decode(data).actor_name for data in messages]


def test_the_jobs_and_their_default_intervals():
    assert [(job.name, job.actor, job.default_interval) for job in scheduler.JOBS] == [
        ("trends:rotation", "apps.trends.tasks:trends_rotate_task", 300),
        ("characters:purge", "apps.characters.tasks:characters_purge_task", 86_400),
        ("generations:purge", "apps.generations.tasks:generations_purge_task", 86_400),
        ("jobs:reap", "apps.jobs.tasks:jobs_reap_task", 600),
        ("purchases:acknowledge", "apps.purchases.tasks:purchases_acknowledge_sweep_task", 3600),
        ("webhooks:resend", "apps.organizations.tasks:webhooks_resend_lost_task", 300),
    ]


def test_each_job_is_enqueued_once_per_its_interval(settings, queue):
    settings.TRENDS_ROTATION_INTERVAL_SECONDS = 300
    settings.CHARACTERS_PURGE_INTERVAL_SECONDS = 86_400
    settings.GENERATIONS_PURGE_INTERVAL_SECONDS = 86_400
    settings.GENERATIONS_REAP_INTERVAL_SECONDS = 600
    settings.PURCHASES_ACKNOWLEDGE_SWEEP_INTERVAL_SECONDS = 3600
    settings.WEBHOOKS_RESEND_INTERVAL_SECONDS = 300
    sent: dict[str, int] = {job.name: 0 for job in scheduler.JOBS}
    # Two processes ticking every minute for a day and a half.
    for minute in range(36 * 60):
        for offset in (0.0, 1.5):
            for name, did in scheduler.tick_all(now=START + minute * 60 + offset).items():
                sent[name] += did
    assert sent == {
        "trends:rotation": 36 * 12,
        "characters:purge": 2,
        "generations:purge": 2,
        "jobs:reap": 36 * 6,
        "purchases:acknowledge": 36,
        "webhooks:resend": 36 * 12,
    }
    names = enqueued()
    assert names.count(trends_rotate_task.actor_name) == 36 * 12
    assert names.count(characters_purge_task.actor_name) == 2
    assert names.count(generations_purge_task.actor_name) == 2
    assert names.count(jobs_reap_task.actor_name) == 36 * 6
    assert names.count(purchases_acknowledge_sweep_task.actor_name) == 36
    assert names.count(webhooks_resend_lost_task.actor_name) == 36 * 12
    assert len(names) == 36 * 12 + 2 + 2 + 36 * 6 + 36 + 36 * 12


def test_the_first_tick_of_a_slot_enqueues_and_the_others_do_not(settings, queue):
    settings.CHARACTERS_PURGE_INTERVAL_SECONDS = 86_400
    first = scheduler.tick_all(now=START + 10)
    again = scheduler.tick_all(now=START + 20)
    assert first == {
        "trends:rotation": True,
        "characters:purge": True,
        "generations:purge": True,
        "jobs:reap": True,
        "purchases:acknowledge": True,
        "webhooks:resend": True,
    }
    assert set(again.values()) == {False}
    assert scheduler.tick_all(now=START + 86_400)["characters:purge"] is True  # the next day


def test_an_interval_of_zero_turns_a_job_off(settings, queue):
    settings.GENERATIONS_REAP_INTERVAL_SECONDS = 0
    assert scheduler.tick_all(now=START)["jobs:reap"] is False
    assert jobs_reap_task.actor_name not in enqueued()


def test_one_failing_job_does_not_stop_the_others(settings, queue, monkeypatch):
    def broken(job, now=None):
        if job.name == "characters:purge":
            raise ConnectionError("down")
        return original(job, now)

    original = scheduler.tick_job
    monkeypatch.setattr(scheduler, "tick_job", broken)
    assert scheduler.tick_all(now=START) == {
        "trends:rotation": True,
        "characters:purge": False,
        "generations:purge": True,
        "jobs:reap": True,
        "purchases:acknowledge": True,
        "webhooks:resend": True,
    }


def test_the_scheduler_sleeps_until_the_soonest_slot(settings):
    settings.TRENDS_ROTATION_INTERVAL_SECONDS = 300
    settings.CHARACTERS_PURGE_INTERVAL_SECONDS = 86_400
    settings.GENERATIONS_REAP_INTERVAL_SECONDS = 600
    assert scheduler.seconds_to_next_slot(now=START + 250) == 50
    settings.TRENDS_ROTATION_INTERVAL_SECONDS = 0
    settings.WEBHOOKS_RESEND_INTERVAL_SECONDS = 0
    assert scheduler.seconds_to_next_slot(now=START + 250) == 350
