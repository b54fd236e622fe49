import pytest

from gpu_worker.contract import CONTRACT_VERSION, GPU_QUEUES, ContractError, JobEvent


def test_an_event_survives_the_round_trip_through_a_message():
    event = JobEvent(
        job_id="g1",
        sequence=3,
        kind="completed",
        progress=1.0,
        outputs={"video": "k.mp4"},
        timings={"denoise": 1.5},
    )
    assert JobEvent.from_message(event.to_message()) == event
    assert event.is_terminal


def test_an_unknown_version_is_refused_not_guessed():
    message = JobEvent(job_id="g1", sequence=1, kind="progress", progress=0.5).to_message()
    message["version"] = CONTRACT_VERSION + 1
    with pytest.raises(ContractError, match="unsupported event version"):
        JobEvent.from_message(message)


@pytest.mark.parametrize(("kind", "progress"), [("exploded", 0.1), ("progress", 1.5), ("progress", -0.1)])
def test_malformed_events_are_refused(kind, progress):
    with pytest.raises(ContractError):
        JobEvent(job_id="g1", sequence=1, kind=kind, progress=progress)


def test_django_actors_never_sit_on_a_gpu_lane():
    import dramatiq

    from apps.core.queues import DJANGO_QUEUES

    broker = dramatiq.get_broker()
    queues = {broker.get_actor(name).queue_name for name in broker.get_declared_actors()}
    assert queues, "no actor declared"
    assert queues <= set(DJANGO_QUEUES)
    assert not queues & set(GPU_QUEUES)
