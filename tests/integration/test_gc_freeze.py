"""At start-up the server moves what start-up allocated out of the garbage collector's generations
(GC_FREEZE_AT_START), so full collections no longer walk Django's and the schema's objects while serving."""

import gc

import pytest

from backend.asgi import Lifespan


async def start_and_stop() -> int:
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent = []
    frozen_at_start = 0

    async def receive():
        return next(messages)

    async def send(message):
        nonlocal frozen_at_start
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            frozen_at_start = gc.get_freeze_count()

    await Lifespan(app=None)({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    return frozen_at_start


@pytest.fixture(autouse=True)
def no_embedded_worker(settings):
    settings.EMBEDDED_WORKER = False
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.django_db
async def test_start_up_freezes_the_objects_it_made(settings):
    settings.GC_FREEZE_AT_START = True
    assert await start_and_stop() > 100_000  # Django, the schema and their modules


@pytest.mark.django_db
async def test_freezing_can_be_turned_off(settings):
    settings.GC_FREEZE_AT_START = False
    assert await start_and_stop() == 0
