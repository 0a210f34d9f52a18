"""The memory backstop: the process's real memory watched against its budget, and work ended when it grows past it.

The memory budget (memory_budget.py) holds what requests are *estimated* to cost; paths the estimate does not know
(a shape costlier than 30 times its JSON, a library's buffers, a leak) grow the process all the same. As Envoy's
overload manager does (a heap monitor, then ``reset_high_memory_stream``), every ``interval`` seconds this reads
what the process really uses — its cgroup v2's ``memory.current`` where there is one (a container, a pod: what the
kernel's OOM killer counts), else its RSS from ``/proc/self/statm`` — and:

* past the **high watermark** (default: the use at start, plus the budget, plus :data:`MARGIN`) — read again
  after the allocator has given back what it holds free (``malloc_trim``), so what ended requests left in the heap
  is never taken for load — the budget refuses new room (``server_overloaded``) to the holders that hold some (a
  holder holding nothing still gets a small request's: memory_budget.py's ``refuses``; refusing everyone refused a
  bystander's small requests all the while the attacker's were being ended) and, reading after reading, a request
  is ended with ``preempted_for_fairness`` — of the holder charged most in all, its largest request (the newest
  among equals; :func:`victims`), so an honest request is never ended while a holder charged more, however many
  small requests it spreads that over, has one left — but **never a request charged under a bystander's size**
  (:data:`SPARED_BYTES`);
* after ending one, it **waits for what that request held to show up as returned** before it reads the process's
  memory as load again (:class:`Settling`): until the reading has fallen by half the request's charge below the
  reading it was ended at, or the request has given its reservation back and :data:`RELEASED_READINGS` readings
  have been taken since, each after a trim (what it let go given back to the system, the reading then counting
  what is still held), or :data:`SETTLE_TICKS` readings' time has passed — so a reading that still counts what an
  ended request is letting go never ends the next one;
* under the **low watermark** (default: the use at start, plus three quarters of the budget, plus the margin), or
  once nothing is left to end (what remains is not the requests', or only bystanders' requests are left), new work
  is admitted again. Freed heap is given back to the system (``malloc_trim``) before every reading it acts on, so
  the reading can come down.

So ``serve`` stays within its use at start, plus its budget, plus the margin, plus what the requests in flight
allocate while one ended request lets go.
Each action is a structured log line (``memory_high_watermark``, ``memory_request_ended``, ``memory_returned``,
``memory_below_low_watermark``, ``memory_backstop_nothing_to_end``) and metrics (``responses_bridge_memory_real_
bytes``, ``…_backstop_active``, ``…_preempted_total``). The reading is a function (:data:`MemorySource`) and so is
the clock, so a test drives both deterministically.

Why the floor and the wait: while the requests it had ended were still letting go of their memory, the next
reading was still high, every request of the attacker's was already ended, and the backstop ended a bystander's
request of 1,120 bytes (``memory_taken_back holder=victim``, 503 ``preempted_for_fairness``). A reading cannot say
which request holds memory the budget was not told of; ending a request charged a kilobyte on the chance that it
does ends bystanders, and gives back nothing the budget knows of.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from ...fairness.allocator import glibc_malloc_trim, resident_bytes
from ...fairness.headroom import MEMORY_FLOOR
from ...fairness.memory_limits import cgroup_limit
from ...fairness.preemption import was_taken_back
from ...fairness.reclaim import still_taking, take_back
from ...fairness.share import FairPool
from ...observability.metrics import MEMORY_BACKSTOP, MEMORY_REAL
from ...process.periodic import Periodic
from .memory_budget import MemoryBudget

HIGH_WATERMARK = "memory_high_watermark"
CGROUP_CURRENT = Path("/sys/fs/cgroup/memory.current")
DEFAULT_INTERVAL = 1.0
MARGIN = 64 << 20
"""Above the use at start and the budget, what the default watermarks leave for what is not a request's: modules
imported on first use, caches, the allocator's slack."""

SETTLE_TICKS = 5
"""Readings' time (``interval`` seconds each) the backstop waits at most, after ending a request, for what it held
to show up as returned before it ends another (:class:`Settling`): ending one a reading while the last had not let
go ended the honest request after the attacker's twelve, the reading still lagging by a megabyte. Bounded, because
a charge may overstate what a request really held (the allocator keeps some of what is freed, however trimmed), or
its work be slow to stop: the backstop then goes on."""
RETURNED_PART = 2
"""What an ended request held shows up as returned once the reading has fallen by 1/RETURNED_PART of its charge
below the reading it was ended at."""
RELEASED_READINGS = 2
"""Or once it has given its reservation back and this many readings have been taken since, each after a trim: the
first counts what it let go as it stopped, the next what was let go just after (its answer written, its
connection's buffers). A charge is what a request may cost at its peak: a held 2 MB request charged 6.0 MB gave
back 1.9 MB of RSS once trimmed, and waiting for half its charge ran the wait out every time."""
SPARED_BYTES = MEMORY_FLOOR
"""A bystander's size: a request charged less is never ended by the backstop, whoever holds it and however high the
reading — 64 KiB, what a small request is charged at most and the least room the fair-share rule keeps for any
tenant (fairness/headroom.py); a small request is charged about a kilobyte. Ending it would give back almost
nothing the budget knows of, and the reading cannot tell which request holds memory the budget was not told of;
with only such requests left, what remains is not the requests' and the backstop stands down. (A tenant's
requests in flight are bounded in number by its concurrency limit, so what such requests can hold unseen is too.)"""

MemorySource = Callable[[], int]
"""Bytes the process uses now (0: unknown)."""

log = structlog.get_logger("responses_bridge.memory")


def cgroup_current(path: Path = CGROUP_CURRENT) -> int:
    """The cgroup v2's ``memory.current`` (0 where there is none)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def default_source(workers: int = 1) -> MemorySource:
    """The cgroup's reading where the process is the only worker in a cgroup v2 with a limit (what the OOM killer
    counts), else its RSS (several workers: the cgroup counts them all, each budget is one worker's)."""
    if workers == 1 and cgroup_current() and cgroup_limit():
        return cgroup_current
    return resident_bytes


def victims(pool: FairPool, spared: int = 0) -> Iterator[tuple[str, Any, int]]:
    """The requests the backstop may end, in the order it ends them, each with its holder's whole charge: by
    holder, the one charged most first; within a holder, its largest request, the newest among equals (it has done
    the least work). By holder, not by request: memory is held by holders — twelve requests each charged its
    history's cost outweigh one large honest request, though each weighs less — so no request of a holder charged
    less is ended while one charged more holds anything to end. Requests already being ended are left out, and so
    are requests charged under ``spared`` bytes (a bystander's size: :data:`SPARED_BYTES`)."""
    ranked = sorted(((state.holds, holder, state) for holder, state in pool.tenants.items() if state.holdings),
                    key=lambda entry: entry[0], reverse=True)
    for holds, holder, state in ranked:
        if holds < spared:  # every request of it is charged less, and so is every one of the holders after it
            return
        holdings = [holding for holding in reversed(state.holdings) if holding.task is not None
                    and holding.bytes >= spared and not was_taken_back(holding.task)]
        holdings.sort(key=lambda holding: holding.bytes, reverse=True)  # stable: the newest first among equals
        for holding in holdings:
            yield holder, holding, holds


class Settling:
    """The request the backstop ended last (``holding``, charged ``charged`` bytes), until what it held shows up as
    returned: ended at the reading ``reading``, at ``since`` on the watch's clock; ``released``: readings taken
    since it gave its reservation back."""

    __slots__ = ("charged", "holding", "reading", "released", "since")

    def __init__(self, holding: Any, charged: int, reading: int, since: float) -> None:
        self.holding = holding
        self.charged = charged
        self.reading = reading
        self.since = since
        self.released = 0

    def returned(self, used: int) -> int:
        """Bytes the reading ``used`` is under the one the request was ended at."""
        return self.reading - used


class MemoryWatch:
    """The backstop of one process's ``budget``: ``high``/``low``: the watermarks in bytes of real use (0: the use
    at start plus the margin, plus the budget / plus three quarters of it); ``interval``: seconds between readings
    (0: off); ``settle``: the seconds it waits at most for what an ended request held to show up as returned (None:
    :data:`SETTLE_TICKS` intervals); ``clock``: monotonic seconds (a test's own)."""

    def __init__(self, budget: MemoryBudget, *, source: MemorySource | None = None, high: int = 0, low: int = 0,
                 interval: float = DEFAULT_INTERVAL, trim: Callable[[], None] | None = None,
                 settle: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self.source = source or default_source()
        self._high, self._low = high, low
        self.high = self.low = 0
        self.active = False
        self.ended = 0
        self.settle = settle if settle is not None else SETTLE_TICKS * (interval or DEFAULT_INTERVAL)
        self.settling: Settling | None = None  # the request ended last, while what it held is not shown returned
        self._clock = clock
        self._trim = trim if trim is not None else glibc_malloc_trim()
        self._ticker = Periodic(interval if budget.total else 0, self.tick_async, name="memory-watch",
                                failure="memory_watch_failed", failure_level="warning")

    def start(self) -> None:
        self.set_watermarks(self.source())
        self._ticker.start()

    async def stop(self) -> None:
        await self._ticker.stop()

    def set_watermarks(self, at_start: int) -> None:
        """The watermarks from the use at start (settings given in bytes win)."""
        total = self.budget.total
        self.high = self._high or at_start + MARGIN + total
        self.low = min(self._low or at_start + MARGIN + total * 3 // 4, self.high)

    async def tick_async(self) -> None:
        """:meth:`tick`, after a trim whenever its reading is to be acted on — judged on what is held, not on what
        the allocator kept of what was freed: past the high watermark, and all the while the backstop acts, but for
        while the request it ended last still holds its reservation (its work stopping: a trim then gives back
        nothing of its memory, which it still holds — the trim as a request was ended came too soon)."""
        if self._trim is not None and self._trim_first():
            await asyncio.to_thread(self._trim)
        self.tick()

    def _trim_first(self) -> bool:
        if not self.active:
            return self.source() >= self.high
        settling = self.settling
        return settling is None or not still_taking(self.budget.pool, settling.holding)

    def tick(self) -> bool:
        """One reading and what it calls for; True if a request was ended."""
        used = self.source()
        if not used:
            return False
        MEMORY_REAL.set(used)
        if not self.active:
            if used < self.high:
                return False
            self._enter(used)
        elif used <= self.low:
            self._leave(used, "memory_below_low_watermark")
            return False
        if self.settling is not None and not self._settled(used):
            return False  # what it ended last is not shown returned yet: this reading is not all load
        pool = self.budget.pool
        tried = False
        for holder, holding, holder_charged in victims(pool, SPARED_BYTES):
            tried = True
            size = int(holding.bytes)
            if take_back(pool, holder, holding, HIGH_WATERMARK):
                self.ended += 1
                self.settling = Settling(holding, size, used, self._clock())
                log.warning("memory_request_ended", used=used, high=self.high, low=self.low, charged=size,
                            holder_charged=holder_charged)
                return True
        if not tried:  # nothing of the requests' left to end (bystanders' aside): what remains is not theirs
            self._leave(used, "memory_backstop_nothing_to_end")
        return False

    def _settled(self, used: int) -> bool:
        """Whether what the request ended last held shows up as returned at the reading ``used``: fallen by
        1/:data:`RETURNED_PART` of its charge, or its reservation given back :data:`RELEASED_READINGS` readings
        ago (each after a trim: :meth:`tick_async`), or the wait for it run out (:attr:`settle` seconds)."""
        settling = self.settling
        assert settling is not None
        if not still_taking(self.budget.pool, settling.holding):
            settling.released += 1
        returned = settling.returned(used)
        waited = self._clock() - settling.since
        if returned * RETURNED_PART < settling.charged and settling.released < RELEASED_READINGS \
                and waited < self.settle:
            return False
        self.settling = None
        log.info("memory_returned", returned=returned, charged=settling.charged, waited=round(waited, 3),
                 released_readings=settling.released)
        return True

    def _enter(self, used: int) -> None:
        self.active = self.budget.refusing = True
        MEMORY_BACKSTOP.set(1)
        log.warning(HIGH_WATERMARK, used=used, high=self.high, low=self.low, held=self.budget.held)

    def _leave(self, used: int, event: str) -> None:
        self.active = self.budget.refusing = False
        self.settling = None
        MEMORY_BACKSTOP.set(0)
        log.warning(event, used=used, high=self.high, low=self.low, held=self.budget.held)
