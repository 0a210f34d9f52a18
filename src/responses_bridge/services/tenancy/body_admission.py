"""A request body's admission, in one place: its bytes pulled as they arrive, held to the caller's body limit, judged
by what they will cost held (fairness/memory_charge.py: their bytes and their JSON objects), and that cost covered
in the memory budget a step at a time (memory_budget.py), waiting in the budget's fair queue (fairness/share.py) with
the body's clock stopped meanwhile (body_pace.py) — before anything is parsed.

The doors only adapt bytes: the HTTP door hands its request's stream over (:meth:`BodyAdmission.pull`), the
ext_proc door each chunk Envoy sends (:meth:`BodyAdmission.add`), and each turns the refusals (413, 503) into its
own kind of answer. Before, a body went back and forth between the door's reader, the budget's cover, the fair
pool and the body's watch as its bytes arrived, each door keeping the order of those steps itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable
from contextlib import AbstractContextManager
from typing import Protocol

from ...fairness.memory_charge import BODY_BYTE_COST, BODY_OBJECT_COST
from .limits import request_too_large
from .memory_budget import STEP_COST, Held


class BodyClock(Protocol):
    """A body's pace (body_pace.py, as a door keeps it): stopped while the bridge does not read."""

    def paused(self) -> AbstractContextManager[None]: ...


class BodyAdmission:
    """One body: ``held``, what its request holds of the memory budget (None: no budget to ask); ``limit``: the
    caller's body limit (0: none); ``declared``: its declared length, if any; ``clock``: its pace, stopped while
    it waits for room."""

    __slots__ = ("_chunks", "_clock", "_held", "cost", "declared", "limit", "size")

    def __init__(self, held: Held | None, limit: int, declared: int | None = None,
                 clock: BodyClock | None = None) -> None:
        if limit and declared is not None and declared > limit:
            raise request_too_large(limit)
        self._held = held
        self._clock = clock
        self._chunks: list[bytes] = []
        self.limit = limit
        self.declared = declared
        self.size = 0
        self.cost = 0
        """What the bytes so far will cost held (budget bytes)."""

    async def pull(self, chunks: AsyncIterable[bytes]) -> bytes:
        """The whole body from ``chunks`` as they arrive (:meth:`add` each), joined; kept by nobody but the
        caller."""
        async for chunk in chunks:
            await self.add(chunk)
        held = self._held
        if held is not None and held.covered > self.cost:  # whole without a declared length: the rest given back
            held.settle(self.cost)
        return self.body()

    async def add(self, chunk: bytes, whole: bool = False) -> None:
        """``chunk`` arrived (``whole``: the body's last, when the door knows it without a declared length): past
        the limit the 413; its cost covered, a step at a time (a body still arriving holds what it cost so far
        rounded up to a step, a whole one its cost: the rest of its last step given back), waiting for room with
        the clock stopped, or the budget's 503."""
        size = self.size + len(chunk)
        limit = self.limit
        if limit and size > limit:
            self._chunks = []
            raise request_too_large(limit)
        self.size = size
        self._chunks.append(chunk)
        held = self._held
        if held is None:
            return
        cost = self.cost = self.cost + BODY_BYTE_COST * len(chunk) + BODY_OBJECT_COST * chunk.count(b"{")
        last = whole or size == self.declared
        if not last:
            cost = -(-cost // STEP_COST) * STEP_COST
        if not held.try_cover(cost):
            clock = self._clock
            with clock.paused() if clock is not None else contextlib.nullcontext():
                await held.cover(cost)
        if last and held.covered > cost:  # whole: what the last step covered beyond its cost is given back
            held.settle(cost)

    def body(self) -> bytes:
        """The bytes so far, joined (and let go here)."""
        chunks, self._chunks = self._chunks, []
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
