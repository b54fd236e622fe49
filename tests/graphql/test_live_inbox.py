"""A follower's inbox (graphql_schema/live.py): a socket that reads slowly gets the latest state, in order,
and what waits for it stays bounded; a final state and the end are never dropped."""

import asyncio

from graphql_schema.live import _GONE, _Inbox


def state(n: int, finished: bool = False):
    return (f"frame {n}", {"n": n}, finished)


async def test_a_newer_state_replaces_one_still_waiting():
    inbox = _Inbox()
    for n in range(1, 1001):
        inbox.put_nowait(state(n))
    assert len(inbox._items) == 1
    assert await inbox.get() == state(1000)


async def test_a_final_state_and_the_end_are_kept_in_order():
    inbox = _Inbox()
    inbox.put_nowait(state(1))
    inbox.put_nowait(state(2, finished=True))
    inbox.put_nowait(_GONE)
    assert [await inbox.get(), await inbox.get()] == [state(2, finished=True), _GONE]
    assert not inbox._items


async def test_a_waiting_reader_gets_each_state_as_it_comes():
    inbox = _Inbox()
    received = []

    async def read():
        while len(received) < 3:
            received.append(await inbox.get())

    reader = asyncio.create_task(read())
    for n in (1, 2, 3):
        await asyncio.sleep(0)  # the reader takes each before the next arrives
        inbox.put_nowait(state(n))
        await asyncio.sleep(0)
    await asyncio.wait_for(reader, 5)
    assert received == [state(1), state(2), state(3)]
