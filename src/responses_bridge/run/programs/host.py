"""Where a response's programs run: a slot shared fairly among tenants, the program's memory bound held in the
process's memory budget while it runs, and a worker process (pool.py) bounded at that memory.

Slots (``RESPONSES_BRIDGE_PROGRAM_SLOTS``) are :class:`~responses_bridge.sandbox.slots.FairSlots`: with tenants, one
tenant holds at most all but one of them; with all busy, a program waits, and a freed slot goes to the waiting
tenant served least lately (fairness/share.py; a running program is never ended for another's turn: its work would be
lost) — so however many programs one tenant queues (``while (true) {}`` each, each ended by its own time bound),
another tenant's program waits for one program to end, never behind the queue. A program that gets no slot within
``RESPONSES_BRIDGE_PROGRAM_SLOT_WAIT`` seconds ends ``incomplete`` saying so. While it runs, the program's bound
(``RESPONSES_BRIDGE_PROGRAM_MEMORY_BYTES``) is reserved for its tenant in the memory budget — the run cannot import
services/, so the budget is reached through :data:`MemoryHold`, given by the composition root (runtime.py); a
budget with no room ends the program ``incomplete`` as well, naming it.

When the program ends its bound comes back, but what it answered stays in the bridge: its tool calls' arguments and
its result, read from the worker, parsed, and kept as the response's items until the response is let go (16
requests whose programs each sent 20 arguments of 1 MiB grew a sidecar on a 1 GiB budget to 1.5 GB, uncharged). So
a program's answer is bounded (``WorkerPool.answer_bytes``: :data:`ANSWER_COST` of it fill the program's memory
bound, which is held while the answer is read and parsed), and once the bound is given back the answer is held in
the budget for the tenant at :data:`ANSWER_COST` per byte (:attr:`ProgramRun.let_go`) until the response lets it
go; a budget with no room for it ends the program ``incomplete``, naming it, and the answer is dropped.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from ...engine.tools.programs import ProgramSigner
from ...fairness.share import Reason
from ...observability import timing, tracing
from ...observability.metrics import PROGRAMS_LIVE, PROGRAMS_WAITING
from ...protocol.errors import APIError
from ...sandbox.slots import FairSlots
from .isolate import DEFAULT_MAX_MEMORY, DEFAULT_TIMEOUT, Limits, ProgramRun
from .pool import LOWER_AFTER_SECONDS, RunHandle, WorkerPool

DEFAULT_SLOTS = 4
DEFAULT_MEMORY_BYTES = 256 << 20
"""What one program may hold beyond V8's own fixed reservations (its heap and its ArrayBuffers together)."""
DEFAULT_SLOT_WAIT = 30.0
ANSWER_COST = 4
"""Bytes the bridge holds per byte of a program's answer while it keeps it: the frame as read, the strings parsed
from it, the response items made of them and their copy in the response's answer or stored row."""
ANSWER_UNCHARGED = 64 << 10
"""An answer smaller than this is not held in the budget on its own: the request's own reservation covers it, and a
tenant at its share is not made to wait for a few bytes."""
SLOTS_SETTING = "RESPONSES_BRIDGE_PROGRAM_SLOTS"
MEMORY_SETTING = "RESPONSES_BRIDGE_PROGRAM_MEMORY_BYTES"
WAIT_SETTING = "RESPONSES_BRIDGE_PROGRAM_SLOT_WAIT"


class Releasable(Protocol):
    def release(self) -> None: ...


MemoryHold = Callable[[str, int], Awaitable[Releasable]]
"""Reserve ``bytes`` of the process's memory budget for ``tenant`` (raises the budget's 503 ``APIError`` when no
room came); the reservation is released when the program ends."""


def no_slot_note(why: Reason, slots: int, wait: float) -> str:
    """Why a program got no slot, as the model reads it (sandbox/slots.py's ``busy_note`` for programs): its
    tenant's share or the slots all busy until its wait ran out, or — at once — the queue full; nothing of other
    tenants'."""
    if why == "queue":
        return (f"Program stopped: all {slots} program slots are busy ({SLOTS_SETTING}) and the queue of programs "
                "waiting for one is full; a full queue gives up the newest program of the tenant holding and "
                "waiting for the most.")
    busy = (f"this tenant's other programs hold its fair share of the {slots} slots" if why == "share"
            else f"all {slots} slots are busy")
    return f"Program stopped: no program slot came free within {wait:g} s ({WAIT_SETTING}): {busy} ({SLOTS_SETTING})."


@dataclass(frozen=True, slots=True)
class ProgramBounds:
    """The settings of programs: slots at once, seconds a program waits for one, bytes one may hold."""

    slots: int = DEFAULT_SLOTS
    slot_wait: float = DEFAULT_SLOT_WAIT
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    timeout: float = DEFAULT_TIMEOUT
    lower_after: float = LOWER_AFTER_SECONDS  # CPU seconds of a program before its worker is lowered (pool.py)

    def limits(self) -> Limits:
        """A program's own limits: its heap within its memory bound."""
        return Limits(timeout=self.timeout, max_memory=min(DEFAULT_MAX_MEMORY, self.memory_bytes))


@dataclass(slots=True)
class ProgramHost:
    """The process's programs. ``share(tenant)``: the slots one tenant may hold at once; ``sign``: keys programs'
    fingerprints; ``hold``: the memory budget's reservation (None: no budget)."""

    sign: ProgramSigner
    bounds: ProgramBounds = field(default_factory=ProgramBounds)
    share: Callable[[str], int] | None = None
    hold: MemoryHold | None = None
    slots: FairSlots = field(init=False)
    pool: WorkerPool = field(init=False)
    _threads: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        total = self.bounds.slots
        self.slots = FairSlots(total, self.share or (lambda tenant: total), what="program slots")
        self.pool = WorkerPool(self.bounds.memory_bytes, keep=total, setting=MEMORY_SETTING,
                               answer_bytes=self.bounds.memory_bytes // ANSWER_COST,
                               lower_after=self.bounds.lower_after)
        # a thread per slot waits on its worker: a program's seconds never hold the default executor's threads
        self._threads = ThreadPoolExecutor(max_workers=total, thread_name_prefix="program")

    @property
    def limits(self) -> Limits:
        return self.bounds.limits()

    async def run(self, tenant: str, code: str, names: list[str], results: list[str], *, seed: int,
                  clock_ms: int) -> ProgramRun:
        """Run one program for ``tenant`` once it has a slot and its memory; what it came to."""
        PROGRAMS_WAITING.inc()
        try:
            why = await self.slots.acquire_or_why(tenant, self.bounds.slot_wait)
        finally:
            PROGRAMS_WAITING.dec()
        if why is not None:
            return ProgramRun("incomplete", limit="slots",
                              result=no_slot_note(why, self.bounds.slots, self.bounds.slot_wait))
        held: Releasable | None = None
        PROGRAMS_LIVE.inc()  # until _end gives the slot back
        try:
            if self.hold is not None:
                try:
                    held = await self.hold(tenant, self.bounds.memory_bytes)
                except APIError as refused:
                    self._end(tenant, None)  # the slot back: the program never ran
                    return ProgramRun("incomplete", limit="memory_budget", result=(
                        "Program stopped: the bridge's memory budget has no room for its memory bound "
                        f"({self.bounds.memory_bytes >> 20} MiB, {MEMORY_SETTING}): {refused.message}"))
            handle = RunHandle()
            work = functools.partial(self.pool.run, code, names, results, seed=seed, clock_ms=clock_ms,
                                     limits=self.limits, handle=handle)
            running = asyncio.get_running_loop().run_in_executor(self._threads, work)
        except BaseException:
            self._end(tenant, held)
            raise
        # the run's own span (the response's stored trace, observability/timing.py, and OTLP's where a collector is
        # set), from its start in a worker to its answer, as a sandbox run has: each round of a program shows,
        # between the tool calls it made
        shown = {"responses_bridge.program.timeout": self.limits.timeout,
                 "responses_bridge.program.memory_bytes": self.bounds.memory_bytes}
        with tracing.span("program run", shown), timing.span("program run", "sandbox", shown):
            run = await _until_done(running, functools.partial(self._end, tenant, held), handle.stop)
        return await self._keep(tenant, run)

    async def _keep(self, tenant: str, run: ProgramRun) -> ProgramRun:
        """``run`` with its answer held in the memory budget for ``tenant`` (:attr:`ProgramRun.let_go`), now that
        its bound is given back; an ``incomplete`` run saying why when the budget has no room for it."""
        size = run.answer_bytes * ANSWER_COST
        if self.hold is None or run.answer_bytes < ANSWER_UNCHARGED:
            return run
        try:
            held = await self.hold(tenant, size)
        except APIError as refused:
            return ProgramRun("incomplete", limit="memory_budget", result=(
                "Program stopped: the bridge's memory budget has no room to keep what it returned (its tool calls' "
                f"arguments and its result: {size / (1 << 20):.1f} MiB held): {refused.message}"))
        run.let_go = held.release
        return run

    def _end(self, tenant: str, held: Releasable | None) -> None:
        if held is not None:
            held.release()
        self.slots.release(tenant)
        PROGRAMS_LIVE.dec()

    def close(self) -> None:
        self.pool.close()
        self._threads.shutdown(wait=False, cancel_futures=True)


async def _until_done(running: asyncio.Future[ProgramRun], end: Callable[[], None],
                      stop: Callable[[], None]) -> ProgramRun:
    """The program's outcome; ``end`` (slot and memory back) once its worker is done with it — after the answer,
    or, when the request is cancelled meanwhile (taken back, or its client gone), once ``stop`` has ended its
    worker: until then the worker still holds the memory and the slot."""
    try:
        outcome = await asyncio.shield(running)
    except asyncio.CancelledError:
        stop()
        if running.done():
            end()
        else:
            running.add_done_callback(lambda _: end())
        raise
    except BaseException:
        end()
        raise
    end()
    return outcome
