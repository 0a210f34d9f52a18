"""The ext_proc stream's turn (adapters/extproc/turn.py) and its outbox's writer waking: the message loop and a
drain never answer at once, the turn passes in order, and a cancelled taker neither keeps nor loses it."""

from __future__ import annotations

import asyncio

from responses_bridge.adapters.extproc._pb.ext_proc_pb2 import ProcessingResponse
from responses_bridge.adapters.extproc.messages import streamed_body
from responses_bridge.adapters.extproc.outbox import Outbox
from responses_bridge.adapters.extproc.turn import Turn


async def test_a_free_turn_is_taken_at_once_and_a_held_one_is_waited_for() -> None:
    turn = Turn()
    assert turn.take_now()
    assert not turn.take_now()
    order: list[str] = []

    async def drain() -> None:
        await turn.take()
        order.append("drain")
        turn.give()

    waiting = asyncio.create_task(drain())
    await asyncio.sleep(0)
    assert order == []  # the loop still holds it
    turn.give()
    assert not turn.take_now()  # handed to the waiting drain, never free in between
    await waiting
    assert order == ["drain"] and turn.take_now()


async def test_the_turn_passes_in_order() -> None:
    turn = Turn()
    assert turn.take_now()
    order: list[int] = []

    async def taker(index: int) -> None:
        await turn.take()
        order.append(index)
        await asyncio.sleep(0)
        turn.give()

    tasks = [asyncio.create_task(taker(index)) for index in range(3)]
    await asyncio.sleep(0)
    turn.give()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and not turn.held


async def test_a_cancelled_taker_neither_keeps_nor_loses_the_turn() -> None:
    turn = Turn()
    assert turn.take_now()
    first = asyncio.create_task(turn.take())
    second = asyncio.create_task(turn.take())
    await asyncio.sleep(0)
    first.cancel()  # cancelled while waiting: it leaves the queue
    await asyncio.sleep(0)
    turn.give()
    await second
    assert first.cancelled() and turn.held
    turn.give()
    assert not turn.held

    assert turn.take_now()
    handed = asyncio.create_task(turn.take())
    await asyncio.sleep(0)
    turn.give()  # the turn is handed to it ...
    handed.cancel()  # ... and it is cancelled before it runs: the turn is given back, not kept
    await asyncio.gather(handed, return_exceptions=True)
    assert not turn.held and turn.take_now()


async def test_the_outbox_writer_sleeps_when_idle_and_wakes_for_the_next_reply() -> None:
    written: list[ProcessingResponse] = []

    async def write(message: ProcessingResponse) -> None:
        written.append(message)
        await asyncio.sleep(0)

    outbox = Outbox(write, merge=True)
    await outbox.flush()  # nothing queued: returns at once
    for index in range(3):
        outbox.put([streamed_body(str(index).encode(), False)])
        await outbox.flush()
        assert len(written) == index + 1
    outbox.put([streamed_body(b"q", False)])
    direct = streamed_body(b"d", True)
    await outbox.send([direct], queued=False)  # written after what was queued before it
    assert written[-2].response_body.response.body_mutation.streamed_response.body == b"q"
    assert written[-1] is direct
    await outbox.close()
