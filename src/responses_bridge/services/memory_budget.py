"""One memory budget for the requests a process holds at once, so a burst of large ones is answered 503 rather than
the pod being killed for memory with every stream in flight.

What a request holds is judged from its body before it is parsed: :data:`COST_PER_BODY_BYTE` times its bytes (a
request's parsed items, translation and stored rows peak at about 30 times the JSON they came in, measured for
100,000 tiny items: the costliest shape; ordinary text costs less). Both doors reserve that much when the body is
in hand, before it is decoded: the HTTP door for the handler's life (adapters/http/limits.py), the ext_proc door
for the gRPC stream's (adapters/extproc/request_phase.py), and a WebSocket turn from the moment its frame is queued
until the turn ends — a queued turn costs what it will cost parsed, not its frame's bytes. Past the budget new work
waits up to :data:`WAIT_SECONDS` for room, then gets a 503 ``server_overloaded`` with ``Retry-After`` (the openai
SDKs retry it). A request larger than the whole budget runs when it is alone, rather than never.

The budget defaults to half of what the process may use: the cgroup's memory limit (a container's, a pod's), else
the machine's memory, shared among the workers.
"""

from __future__ import annotations

import asyncio

from ..observability.metrics import MEMORY_HELD, MEMORY_REFUSED
from ..protocol.errors import APIError

OVERLOADED = "server_overloaded"
COST_PER_BODY_BYTE = 30
WAIT_SECONDS = 2.0


def overloaded() -> APIError:
    MEMORY_REFUSED.inc()
    return APIError(503, "The server is holding as much request memory as it may (RESPONSES_BRIDGE_MEMORY_BUDGET_"
                    "BYTES); retry shortly.", type="server_error", code=OVERLOADED)


class Reservation:
    """Bytes of the budget one request holds; :meth:`release` is idempotent, so every exit path may call it."""

    __slots__ = ("_budget", "bytes")

    def __init__(self, budget: MemoryBudget | None, size: int) -> None:
        self._budget = budget
        self.bytes = size

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget._give_back(self.bytes)


NOTHING = Reservation(None, 0)
"""What a request without a body (or a process without a budget) holds."""


class Held:
    """What one request holds of the budget, reserved once its body's size is known (by whoever reads it) and
    given back by whoever started the request, however it ends."""

    __slots__ = ("_budget", "_reservation")

    def __init__(self, budget: MemoryBudget) -> None:
        self._budget = budget
        self._reservation = NOTHING

    async def reserve(self, body_bytes: int) -> None:
        if self._reservation is NOTHING:
            self._reservation = await self._budget.reserve(body_bytes)

    def release(self) -> None:
        self._reservation.release()


class MemoryBudget:
    """The process's reservations against ``total`` bytes (0: no budget)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0
        self._room = asyncio.Condition()
        self._waiting = 0

    async def reserve(self, body_bytes: int, *, wait: float = WAIT_SECONDS) -> Reservation:
        """Room for a request of ``body_bytes``; raises the 503 (:func:`overloaded`) when none came within
        ``wait`` seconds."""
        if not self.total or not body_bytes:
            return NOTHING
        size = min(body_bytes * COST_PER_BODY_BYTE, self.total)  # the largest runs alone rather than never
        if self.held + size <= self.total:
            self.held += size
            MEMORY_HELD.set(self.held)
            return Reservation(self, size)
        self._waiting += 1
        try:
            async with asyncio.timeout(wait), self._room:
                await self._room.wait_for(lambda: self.held + size <= self.total)
                self.held += size
                MEMORY_HELD.set(self.held)
        except TimeoutError:
            raise overloaded() from None
        finally:
            self._waiting -= 1
        return Reservation(self, size)

    def _give_back(self, size: int) -> None:
        self.held -= size
        MEMORY_HELD.set(self.held)
        if self._waiting:  # a request waits for room: wake it (from a task: release is not a coroutine)
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._room:
            self._room.notify_all()
