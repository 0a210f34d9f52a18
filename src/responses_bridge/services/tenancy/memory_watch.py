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
  bystander's small requests all the while the attacker's were being ended) and, tick after tick, a request is
  ended with ``preempted_for_fairness`` — of
  the holder charged most in all, its largest request (the newest among equals; :func:`victims`), so an honest
  request is never ended while a holder charged more, however many small requests it spreads that over, has one
  left; a request is ended only once those ended before it have stopped (their memory freed and the allocator
  trimmed, :data:`SETTLE_TICKS` readings at most), so the reading it acts on counts what was given back;
* under the **low watermark** (default: the use at start, plus three quarters of the budget, plus the margin), or
  once nothing is
  left to end (what remains is not the requests'), new work is admitted again; freed heap is given back to the
  system (``malloc_trim``) as requests are ended, so the reading can come down.

So ``serve`` stays within its use at start, plus its budget, plus the margin, plus what the requests in flight
allocate in one tick.
Each action is a structured log line (``memory_high_watermark``, ``memory_request_ended``, ``memory_below_low_
watermark``) and metrics (``responses_bridge_memory_real_bytes``, ``…_backstop_active``, ``…_preempted_total``).
The reading is a function (:data:`MemorySource`), so a test drives it deterministically.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from ...fairness.allocator import glibc_malloc_trim, resident_bytes
from ...fairness.memory_limits import cgroup_limit
from ...fairness.preemption import was_taken_back
from ...fairness.reclaim import take_back
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
"""Readings the backstop lets pass while requests it ended are still stopping (their memory not yet freed, so the
reading is not yet down) before it ends another: ending one a tick while the last had not let go ended the honest
request after the attacker's twelve, the reading still lagging by a megabyte."""

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


def victims(pool: FairPool) -> Iterator[tuple[str, Any, int]]:
    """The requests the backstop may end, in the order it ends them, each with its holder's whole charge: by
    holder, the one charged most first; within a holder, its largest request, the newest among equals (it has done
    the least work). By holder, not by request: memory is held by holders — twelve requests each charged its
    history's cost outweigh one large honest request, though each weighs less — so no request of a holder charged
    less is ended while one charged more holds anything to end. Requests already being ended are left out."""
    ranked = sorted(((state.holds, holder, state) for holder, state in pool.tenants.items() if state.holdings),
                    key=lambda entry: entry[0], reverse=True)
    for holds, holder, state in ranked:
        holdings = [holding for holding in reversed(state.holdings)
                    if holding.task is not None and not was_taken_back(holding.task)]
        holdings.sort(key=lambda holding: holding.bytes, reverse=True)  # stable: the newest first among equals
        for holding in holdings:
            yield holder, holding, holds


class MemoryWatch:
    """The backstop of one process's ``budget``: ``high``/``low``: the watermarks in bytes of real use (0: the use
    at start plus the margin, plus the budget / plus three quarters of it); ``interval``: seconds between readings
    (0: off)."""

    def __init__(self, budget: MemoryBudget, *, source: MemorySource | None = None, high: int = 0, low: int = 0,
                 interval: float = DEFAULT_INTERVAL, trim: Callable[[], None] | None = None) -> None:
        self.budget = budget
        self.source = source or default_source()
        self._high, self._low = high, low
        self.high = self.low = 0
        self.active = False
        self.ended = 0
        self._waited = 0  # ticks in a row it waited for what it ended to stop (SETTLE_TICKS)
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
        if not self.active and self._trim is not None and self.source() >= self.high:
            await asyncio.to_thread(self._trim)  # judged on what is held, not on what the allocator kept: read again
        if self.tick() and self._trim is not None:
            await asyncio.to_thread(self._trim)

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
        pool = self.budget.pool
        if pool.being_taken_back() and self._waited < SETTLE_TICKS:  # what was ended is not freed yet: read again
            self._waited += 1
            return False
        self._waited = 0
        tried = False
        for holder, holding, holder_charged in victims(pool):
            tried = True
            size = int(holding.bytes)
            if take_back(pool, holder, holding, HIGH_WATERMARK):
                self.ended += 1
                log.warning("memory_request_ended", used=used, high=self.high, low=self.low, charged=size,
                            holder_charged=holder_charged)
                return True
        if not tried:  # nothing of the requests' left to end: what remains is not theirs
            self._leave(used, "memory_backstop_nothing_to_end")
        return False

    def _enter(self, used: int) -> None:
        self.active = self.budget.refusing = True
        MEMORY_BACKSTOP.set(1)
        log.warning(HIGH_WATERMARK, used=used, high=self.high, low=self.low, held=self.budget.held)

    def _leave(self, used: int, event: str) -> None:
        self.active = self.budget.refusing = False
        MEMORY_BACKSTOP.set(0)
        log.warning(event, used=used, high=self.high, low=self.low, held=self.budget.held)
