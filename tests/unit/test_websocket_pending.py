"""WebSocket mode's pending turns: what a client sends ahead of the running turn is bounded in bytes, and past the
bound the reader waits (so the socket stops being read) instead of holding every frame."""

from __future__ import annotations

import asyncio

from responses_bridge.adapters.http.websocket import PendingTurns


async def settle() -> None:
    """Let every task that can run do so (a blocked ``put`` cannot finish however long this lasts)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_messages_come_out_in_order() -> None:
    pending = PendingTurns(budget=100)
    for message in ("a", b"b", "c"):
        await pending.put(message)
    assert [await pending.get() for _ in range(3)] == ["a", b"b", "c"]
    assert pending.waiting_bytes == 0


async def test_the_reader_waits_past_the_budget_until_a_turn_is_taken() -> None:
    pending = PendingTurns(budget=100)
    await pending.put("x" * 60)
    blocked = asyncio.create_task(pending.put("y" * 60))  # 120 bytes would wait: over the budget
    await settle()
    assert not blocked.done() and pending.waiting_bytes == 60
    assert await pending.get() == "x" * 60
    await asyncio.wait_for(blocked, 5)
    assert pending.waiting_bytes == 60 and await pending.get() == "y" * 60


async def test_one_message_larger_than_the_budget_is_still_let_in() -> None:
    pending = PendingTurns(budget=10)
    await asyncio.wait_for(pending.put("z" * 50), 5)  # nothing waits: it goes in, else the socket would stall
    blocked = asyncio.create_task(pending.put("w"))
    await settle()
    assert not blocked.done()
    assert await pending.get() == "z" * 50
    await asyncio.wait_for(blocked, 5)
    assert await pending.get() == "w"


async def test_the_end_of_a_draining_door_goes_in_at_once() -> None:
    pending = PendingTurns(budget=10)
    await pending.put("z" * 50)
    pending.put_nowait(None)  # from a plain callback: never waits
    assert await pending.get() == "z" * 50
    assert await pending.get() is None
    assert pending.waiting_bytes == 0
