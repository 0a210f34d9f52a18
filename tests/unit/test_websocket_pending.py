"""WebSocket mode's pending turns: what a client sends ahead of the running turns is bounded in bytes across every
lane (a waiting turn is its frame's bytes, so what the budget counts is what it costs), and past the bound the
reader waits (so the socket stops being read) instead of holding every frame; turns on one lane run in order,
lanes at once, and a lane past the limit is refused."""

from __future__ import annotations

import asyncio
from typing import Any

from responses_bridge.adapters.http.websocket.lanes import Lanes


async def settle() -> None:
    """Let every task that can run do so (a blocked wait cannot finish however long this lasts)."""
    for _ in range(10):
        await asyncio.sleep(0)


def frame(n: int, size: int = 10) -> bytes:
    """Turn ``n``'s frame, ``size`` bytes long (the lanes never look inside one)."""
    return f"{n}:".encode().ljust(size, b" ")


class Recorder:
    """A turn runner whose turns each wait for their own gate, recording when they start and end."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str | None, Any]] = []
        self.gates: dict[Any, asyncio.Event] = {}

    def gate(self, name: Any) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    async def __call__(self, turn: bytes, stream_id: str | None) -> None:
        n = int(turn.split(b":")[0])
        self.log.append(("start", stream_id, n))
        await self.gate(n).wait()
        self.log.append(("end", stream_id, n))


async def test_one_lane_runs_in_order_and_lanes_run_at_once() -> None:
    turns = Recorder()
    lanes = Lanes(turns, max_lanes=4, budget=1000)
    for n, lane in ((1, "a"), (2, "a"), (3, "b"), (4, None)):
        assert lanes.add(lane, frame(n))
    await settle()
    assert sorted(turns.log, key=str) == sorted([("start", "a", 1), ("start", "b", 3), ("start", None, 4)], key=str)
    turns.gate(3).set()  # lane b ends first while lane a's first turn still runs
    await settle()
    assert ("end", "b", 3) in turns.log and ("start", "a", 2) not in turns.log and lanes.busy == 2
    turns.gate(1).set()
    await settle()
    assert turns.log.index(("end", "a", 1)) < turns.log.index(("start", "a", 2))
    turns.gate(2).set()
    turns.gate(4).set()
    await asyncio.wait_for(lanes.wait_idle(), 5)
    assert lanes.busy == 0 and lanes.waiting_bytes == 0


async def test_a_lane_past_the_limit_is_refused_and_a_finished_lane_frees_its_place() -> None:
    turns = Recorder()
    lanes = Lanes(turns, max_lanes=2, budget=1000)
    assert lanes.add("a", frame(1, 5)) and lanes.add("b", frame(2, 5))
    assert lanes.add("a", frame(3, 5))  # a busy lane takes more turns
    assert not lanes.add("c", frame(4, 5))
    turns.gate(2).set()
    await settle()
    assert lanes.add("c", frame(5, 5))
    await lanes.cancel()
    assert lanes.busy == 0 and lanes.waiting_bytes == 0


async def test_the_reader_waits_past_the_budget_until_a_turn_is_taken() -> None:
    turns = Recorder()
    lanes = Lanes(turns, max_lanes=4, budget=100)
    lanes.add("a", frame(1, 60))  # taken at once by lane a's task
    await settle()
    await asyncio.wait_for(lanes.room(60), 5)
    lanes.add("a", frame(2, 60))  # waits behind turn 1
    blocked = asyncio.create_task(lanes.room(60))  # 120 bytes would wait: over the budget
    await settle()
    assert not blocked.done() and lanes.waiting_bytes == 60
    turns.gate(1).set()  # turn 2 is taken: its bytes no longer wait
    await asyncio.wait_for(blocked, 5)
    assert lanes.waiting_bytes == 0
    await lanes.cancel()


async def test_one_message_larger_than_the_budget_is_still_let_in() -> None:
    turns = Recorder()
    lanes = Lanes(turns, max_lanes=4, budget=10)
    await asyncio.wait_for(lanes.room(50), 5)  # nothing waits: it goes in, else the socket would stall
    lanes.add("a", frame(1, 5))
    lanes.add("a", frame(2, 50))
    await settle()
    blocked = asyncio.create_task(lanes.room(1))
    await settle()
    assert not blocked.done()
    await lanes.cancel()  # cancelled lanes drop their waiting turns: the reader goes on
    await asyncio.wait_for(blocked, 5)
    assert lanes.waiting_bytes == 0


async def test_stopping_ends_each_lane_after_its_running_turn() -> None:
    turns = Recorder()
    lanes = Lanes(turns, max_lanes=4, budget=1000)
    lanes.add("a", frame(1, 5))
    lanes.add("a", frame(2, 5))
    await settle()
    lanes.stop()
    turns.gate(1).set()
    await asyncio.wait_for(lanes.wait_idle(), 5)
    assert ("start", "a", 2) not in turns.log and lanes.waiting_bytes == 0
