"""WebSocket lanes: the ``stream_id`` of a ``response.create`` picks the lane its turn runs on.

Turns on one lane run one after another, in the order they arrived (FIFO); turns on different lanes run at the
same time on the one socket. A message without ``stream_id`` goes to the default lane (key ``None``), so a client
that never sends one gets one turn at a time, as before lanes. A lane lives while it has a turn running or
waiting: its task ends when it runs dry, and the lane is forgotten, so ``max_lanes`` bounds the lanes busy at once,
not the names a connection may ever use.

What a client sends ahead of the running turns is bounded in bytes across every lane: past ``budget`` bytes
waiting (one message is always let in, whatever its size) the reader waits until a lane takes a turn, so the
socket's buffers fill and TCP holds the client back, instead of the process holding every frame a fast client
sends. A waiting turn is held as its frame's bytes, never as the objects they parse into (a frame of many short
input items is some ten times its size once parsed, and millions of small objects freed together do not always
go back to the system), so the budget is what the waiting turns cost in memory; a turn is parsed again when its
lane takes it. Each turn also holds its part of the process's memory budget (services/tenancy/memory_budget.py: what it
will cost parsed) from its queueing to its end, given back here however it ends, run or dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

import structlog

from ....fairness.memory_charge import hold, release_hold
from ....services.tenancy.memory_budget import NOTHING, Reservation

log = structlog.get_logger("responses_bridge.websocket")

RunTurn = Callable[[bytes, "str | None"], Awaitable[None]]
"""Runs one turn (its ``response.create`` frame, as received) on the lane named by the second argument."""


class Lane:
    """One lane's waiting turns (each its frame's bytes) and the task working through them."""

    __slots__ = ("task", "waiting")

    def __init__(self) -> None:
        self.waiting: deque[tuple[bytes, Reservation]] = deque()
        self.task: asyncio.Task[None] | None = None


class Lanes:
    def __init__(self, run_turn: RunTurn, *, max_lanes: int, budget: int) -> None:
        self._run_turn = run_turn
        self.max_lanes = max_lanes
        self._budget = budget
        self._lanes: dict[str | None, Lane] = {}
        self._bytes = 0
        self._taken = asyncio.Event()  # a lane took a turn (or dropped its waiting ones): bytes were freed
        self._idle = asyncio.Event()  # no lane is busy
        self._idle.set()
        self.stopping = False  # the door drains: no turn starts any more, each lane ends after its running turn

    @property
    def waiting_bytes(self) -> int:
        return self._bytes

    @property
    def busy(self) -> int:
        return len(self._lanes)

    async def room(self, size: int) -> None:
        """Wait until ``size`` more bytes may wait; with nothing waiting, any size may."""
        while self._bytes and self._bytes + size > self._budget:
            self._taken.clear()
            await self._taken.wait()

    def add(self, stream_id: str | None, frame: bytes, held: Reservation = NOTHING) -> bool:
        """Queue the turn ``frame`` asks for on its lane, starting the lane if it is not busy. Never waits, so
        nothing can change between the lookup and the queueing. False: a new lane would be one more than
        ``max_lanes`` (``held`` is then the caller's to give back)."""
        lane = self._lanes.get(stream_id)
        if lane is None:
            if len(self._lanes) >= self.max_lanes:
                return False
            lane = self._lanes[stream_id] = Lane()
            self._idle.clear()
            lane.task = asyncio.create_task(self._work(stream_id, lane))
        lane.waiting.append((frame, held))
        self._bytes += len(frame)
        return True

    async def _work(self, stream_id: str | None, lane: Lane) -> None:
        try:
            while lane.waiting and not self.stopping:
                frame, held = lane.waiting.popleft()
                self._bytes -= len(frame)
                self._taken.set()
                turn = self._run_turn(frame, stream_id)
                del frame  # the turn holds the only reference: it lets the bytes go once it has parsed them
                holding = hold(held)  # what the turn loads is charged to it too (fairness/memory_charge.py)
                try:
                    await turn
                finally:
                    release_hold(holding)
                    held.release()
        except ConnectionResetError:
            return  # the socket is gone: the reader sees it end and cancels the other lanes
        except Exception:  # a turn answers its own errors; this is the socket failing under it: end the lane
            log.exception("websocket_lane_failed", stream_id=stream_id)
        finally:
            self._forget(stream_id, lane)

    def _forget(self, stream_id: str | None, lane: Lane) -> None:
        for frame, held in lane.waiting:  # turns that will not run (the door drains, the socket went away)
            self._bytes -= len(frame)
            held.release()
        lane.waiting.clear()
        self._taken.set()
        if self._lanes.get(stream_id) is lane:
            del self._lanes[stream_id]
        if not self._lanes:
            self._idle.set()

    def stop(self) -> None:
        """No turn starts any more; each lane ends after the turn it is running."""
        self.stopping = True

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def cancel(self) -> None:
        """Cancel every lane's task (a running turn records its response as abandoned) and wait for them all."""
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream_id, lane in list(self._lanes.items()):  # a task cancelled before it first ran never cleaned up
            self._forget(stream_id, lane)
