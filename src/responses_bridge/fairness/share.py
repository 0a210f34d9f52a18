"""The one rule of every pool the tenants share (the memory budget, upstream calls, program slots, sandbox slots,
egress connections): share by service over time, and never throw work away for fairness.

A tenant asks for ``size`` (a unit, or bytes):

* the pool has room, nobody waits, and the tenant stays within ``cap`` (what one tenant may hold alone: the
  pool's share setting): served at once (O(1)) — the pool is used fully while nobody else wants it. Beside other
  tenants (holding, waiting, or seen within a window), the last part of the pool (half a unit pool, an eighth
  of the memory budget) is **headroom** a tenant may take only up to its floor, so long work never holds the
  last of it and a tenant holding nothing finds room at once (headroom.py: the rule and the bound it
  guarantees); a waiter it keeps out is set aside until room comes back above it;
* otherwise the request waits in the pool's queue, bounded (:attr:`FairPool.queue`). Room given back goes to the
  waiting tenant with the **least attained service** — the amount it held times how long, decayed over time
  (tenure.py: unit-seconds in a unit pool, byte-seconds in the memory budget, forgotten with a time constant
  of a few ``RESPONSES_BRIDGE_FAIR_SHARE_QUANTUM``), counting what it holds up to its last event; among tenants
  served alike (not yet served), the one claiming least (held + waiting) — first come first served within a
  tenant. A tenant served least lately goes first however many tenants another caller makes:
  each of those is served too, so each is no lighter than the victim. A tenant at its cap waits for its own work
  to end. Past the queue's bound, the newest waiter of the tenant holding and waiting most is refused at once in
  the asker's place (the asker itself when that is it); a wait past the pool's own timeout is refused too — saying
  the tenant's share when it holds at least its ``C / n`` or its cap, the pool busy with others' work otherwise.

Nothing is taken back for fairness: a model call, a program, a sandbox run or a request's memory that is ended is
thrown away, not paused (beside 16 greedy tenants × 3 ten-second calls on 4 units, taking back calls past a quantum
finished ~7× less work, and never the victim's call). Work that can resume comes back to the queue by itself:
every model call takes a unit and gives it back at its end, so a durable run (a background response, a session's
turn) asks again at its next step boundary and waits at its tenant's place (run/upstream_gate.py: a durable run
waits on rather than fail). The two exceptions end work for reasons other than its share of the queue: the memory
backstop (services/tenancy/memory_watch.py, through :meth:`FairPool.largest` / :meth:`FairPool.take_back`) when
real memory passes its watermark, and the egress proxy, whose connections are accepted before they are admitted
and cannot wait: there a tenant under its ``C / n`` gets the newest connection of the tenant holding most above
its own (:meth:`FairPool.make_room`).

Bookkeeping is O(log n) per admit and release: the waiting tenants in a heap keyed by their service record (lazy
invalidation: a tenant is re-keyed at its own events only), each tenant's waiters in a FIFO.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from ..observability.timing import CURRENT as _TIMING
from .headroom import HEADROOM, Window, may_dip, set_aside, shared, sizes, unblock
from .preemption import PREEMPTED, current_task
from .tenure import RENORMALISE, Service

__all__ = ["PREEMPTED", "FairPool", "Reason", "Refused", "fair_holds"]

Reason = Literal["share", "full", "queue"]
_monotonic = time.monotonic
_exp = math.exp
IDLE_KEPT = 4096
"""Idle tenants whose service records are kept (past it, those decayed to nothing go, then the oldest quarter)."""
FORGOTTEN = 1e-3
"""Service (unit- or byte-seconds) below which an idle tenant's record is dropped: it is then a fresh tenant."""


class _Tenant:
    __slots__ = ("at", "holdings", "holds", "keyed", "queue", "served", "waiting")

    def __init__(self, at: float) -> None:
        self.holds = 0
        self.waiting = 0  # waiters still waiting (the queue may keep withdrawn ones until they reach its head)
        self.served = 0.0  # the service record (tenure.py), up to ``at``
        self.at = at  # when (monotonic) ``served`` was last brought up to date
        self.keyed = 0  # the version of its live heap entry (0: none)
        self.queue: deque[_Waiter] | None = None  # made as it first waits: an idle record stays small
        self.holdings: dict[Any, int] = {}  # what may be taken back (egress, the memory backstop)


class _Waiter:
    __slots__ = ("future", "size", "tenant")

    def __init__(self, tenant: str, size: int) -> None:
        self.tenant = tenant
        self.size = size
        self.future: asyncio.Future[Reason | None] = asyncio.get_running_loop().create_future()


class Refused(Exception):
    """No room came: ``reason`` is ``share`` (the tenant holds at least its fair share, or its cap), ``full`` (the
    pool stayed busy with others' work) or ``queue`` (the queue is at its bound)."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


def fair_holds(capacity: int, holds: int, tenants: int) -> bool:
    """Does a tenant holding ``holds`` hold at least its fair share ``capacity / tenants``? (In integers.)"""
    return holds * tenants >= capacity


class FairPool:
    """``capacity`` (units or bytes) shared by the rule above; ``cap(tenant)``: what one tenant may hold alone;
    ``what``: the pool's name in an ended request's error ("request memory"); ``queue``: how many requests may wait
    at once. ``units``: the holdings are the holders' tasks themselves (one unit each), else objects with ``bytes``
    and ``task`` (a memory reservation). ``quantum``: the unit of the service records' memory (None: the process's,
    ``RESPONSES_BRIDGE_FAIR_SHARE_QUANTUM``). ``headroom``: the part kept for tenants holding little while the pool
    is shared (headroom.py; 0: none — the egress connections, which take back instead), ``least_floor`` the least
    a tenant may take into it."""

    def __init__(self, capacity: int, cap: Callable[[str], int], *, what: str, queue: int,
                 units: bool = False, quantum: float | None = None, headroom: float = HEADROOM,
                 least_floor: int = 1) -> None:
        self.capacity = capacity
        self.reserve, self.floor = sizes(capacity, headroom, least_floor)  # headroom.py
        self.window = Window()
        self.cap = cap
        self.what = what
        self.queue = max(1, queue)
        self.units = units
        self.held = 0
        self.waiting = 0  # waiters of every tenant
        self.tenants: dict[str, _Tenant] = {}  # the n: tenants holding or waiting
        self.service = Service(quantum)
        self._heap: list[tuple[float, int, int, _Tenant, str]] = []  # (record, claim, version, state, tenant)
        self._order = itertools.count(1)
        self._taking: dict[Any, int] = {}  # holdings being taken back: the room each will give back
        self._idle: dict[str, _Tenant] = {}  # tenants holding nothing, kept for their service records
        self.preempted = 0
        self.on_preempt: Callable[[str, str, int], None] | None = None  # (tenant, why, size): metrics and a log

    # -- service ---------------------------------------------------------------------------------------------------
    def _accrue(self, state: _Tenant, now: float) -> None:
        """``state``'s record brought up to ``now``: what it held since its last event, integrated with the decay
        (``holds * tau * (e^x(now) - e^x(at))``, tenure.py). Nothing held: only the time is kept (no
        exponential). The hot paths inline it."""
        if state.holds:
            service = self.service
            tau = service.tau
            exponent = (now - service.origin) / tau
            if exponent > RENORMALISE:
                self._renormalise(now)
                exponent = 0.0
            state.served += state.holds * tau * (_exp(exponent) - _exp((state.at - service.origin) / tau))
        state.at = now

    def _renormalise(self, now: float) -> None:
        scale = self.service.renormalise(now)
        for state in itertools.chain(self.tenants.values(), self._idle.values()):
            state.served /= scale
        self._heap = [(state.served, claim, version, state, name) for _, claim, version, state, name in self._heap]
        heapq.heapify(self._heap)

    def attained(self, tenant: str) -> float:
        """``tenant``'s service now (unit- or byte-seconds, decayed), what it holds counted up to now."""
        state = self.tenants.get(tenant) or self._idle.get(tenant)
        if state is None:
            return 0.0
        self._accrue(state, _monotonic())
        return self.service.attained(state.served, state.at)

    # -- counts ----------------------------------------------------------------------------------------------------
    def holds(self, tenant: str) -> int:
        state = self.tenants.get(tenant)
        return state.holds if state is not None else 0

    def _present(self, tenant: str) -> int:
        """n: the tenants holding or waiting, ``tenant`` counted."""
        return len(self.tenants) + (tenant not in self.tenants)

    def try_take(self, tenant: str, size: int) -> _Tenant | None:
        """``size`` for ``tenant`` at once if the pool has room, nobody waits and it stays within its cap (O(1));
        its state (truthy) if so."""
        free = self.capacity - self.held - size
        if self.waiting or free < 0:
            return None
        state = self.tenants.get(tenant)
        if free < self.reserve and not may_dip(self, tenant, state.holds if state else 0, size, _monotonic()):
            return None  # into the headroom past its floor, beside others (headroom.py)
        if state is None:  # _join, inlined: every request's first holding comes here
            state = self._idle.pop(tenant, None) or _Tenant(0.0)
            self.tenants[tenant] = state
        elif state.holds:
            if state.holds + size > self.cap(tenant):  # past its cap alone
                return None
            self._accrue(state, _monotonic())
            state.holds += size
            self.held += size
            return state
        state.at = _monotonic()  # _accrue, inlined: holding nothing, nothing to add
        state.holds += size
        self.held += size
        return state

    def give(self, tenant: str, size: int) -> None:
        """``size`` of ``tenant``'s back (its service counted); the waiters it fits served."""
        self.held -= size
        state = self.tenants.get(tenant)
        if state is not None:
            now = _monotonic()
            holds = state.holds
            if holds:  # _accrue, inlined: every request's release comes here
                service = self.service
                tau, origin = service.tau, service.origin
                exponent = (now - origin) / tau
                if exponent > RENORMALISE:
                    self._renormalise(now)
                    exponent, origin = 0.0, now
                state.served += holds * tau * (_exp(exponent) - _exp((state.at - origin) / tau))
            state.at = now
            holds -= size
            state.holds = holds
            if state.waiting:
                self._key(tenant, state)  # served more: its place among the waiting tenants moves back
            elif holds <= 0:  # _retire, inlined: every request's last release comes here
                del self.tenants[tenant]
                window = self.window  # window.left, inlined
                if tenant != window.last:
                    window.other_at, window.last = window.last_at, tenant
                window.last_at = now
                if not state.holdings:
                    idle = self._idle
                    idle[tenant] = state
                    if len(idle) > IDLE_KEPT:
                        self._forget(idle)
        if self.waiting:
            if self.window.blocked and self.capacity - self.held > self.reserve:
                unblock(self)  # room above the headroom: the tenants it set aside may take it
            self._dispatch()

    # -- holdings (what may be taken back: egress connections, the memory backstop) --------------------------------
    def enlist(self, tenant: str, holding: Any) -> None:
        state = self.tenants.get(tenant)
        if state is not None and holding is not None:
            state.holdings[holding] = state.holdings.get(holding, 0) + 1

    def discharge(self, tenant: str, holding: Any) -> None:
        """``holding`` no longer held (call before :meth:`give` of its size). O(1)."""
        state = self.tenants.get(tenant)
        if state is None:
            return
        count = state.holdings.pop(holding, 0)
        if count > 1:
            state.holdings[holding] = count - 1
        elif count and self._taking:
            self._taking.pop(holding, None)

    def discharge_current(self, tenant: str) -> None:
        """A unit pool's release by ``tenant`` (its :meth:`give` follows): the current task's holding (O(1)), else
        one whose task ended, else the oldest."""
        state = self.tenants.get(tenant)
        if state is None or not state.holdings:
            return
        holdings = state.holdings
        task = current_task()
        if task not in holdings:
            task = next((held for held in holdings if held.done()), next(iter(holdings)))
        self.discharge(tenant, task)

    def _size(self, holding: Any) -> int:
        return 1 if self.units else int(holding.bytes)

    def _task(self, holding: Any) -> asyncio.Task[Any] | None:
        return holding if self.units else holding.task

    # -- waiting ---------------------------------------------------------------------------------------------------
    async def take(self, tenant: str, size: int, wait: float | None) -> None:
        """``size`` for ``tenant``: at once, or once given to it (least served first) within ``wait`` seconds (None:
        until it comes); raises :class:`Refused` saying why not."""
        if self.try_take(tenant, size):
            return
        state = self.tenants.get(tenant)
        if state is None:
            state = self._join(tenant)
        if self.waiting >= self.queue and not self._evict_for(tenant, state):
            if state.holds <= 0 and not state.waiting:
                self._retire(tenant, state)
            raise Refused("queue")
        waiter = _Waiter(tenant, size)
        if state.queue is None:
            state.queue = deque()
        state.queue.append(waiter)
        state.waiting += 1
        self.waiting += 1
        self._accrue(state, _monotonic())
        self._key(tenant, state)  # its claim grew: among tenants served as little, the least claiming goes first
        self._dispatch()
        began = time.perf_counter()  # the wait goes into the request's timing (observability/timing.py)
        try:
            async with asyncio.timeout(wait):
                refused = await asyncio.shield(waiter.future)
        except TimeoutError:
            refused = self._withdraw(waiter)
            if refused is None:  # granted as the time ran out: held
                return
            refused = "share" if self._at_share(tenant, size) else "full"
        except BaseException:  # the request went away while it waited: nothing may stay held for it
            if self._withdraw(waiter) is None:
                self.give(tenant, size)
            raise
        finally:
            timing = _TIMING.get()
            if timing is not None:
                timing.waited(self.what, began, time.perf_counter())
        if refused is not None:
            raise Refused(refused)

    def _key(self, tenant: str, state: _Tenant) -> None:
        """``tenant`` (waiting) placed among the waiting tenants by its record now — among records alike (tenants
        not served yet), the one claiming least (held + waiting: max-min fairness serves the smallest demand first),
        then the first keyed; its older entry goes stale."""
        order = next(self._order)
        state.keyed = order
        heap = self._heap
        heapq.heappush(heap, (state.served, state.holds + state.waiting, order, state, tenant))
        if len(heap) > 64 + 4 * len(self.tenants):  # stale entries outnumber the live ones: dropped (amortised)
            self._heap = [entry for entry in heap if entry[3].keyed == entry[2] and entry[3].waiting]
            heapq.heapify(self._heap)

    def _withdraw(self, waiter: _Waiter) -> Reason | None:
        """Stop waiting: None if the room was granted meanwhile (it is then held), else the refusal. The waiter
        stays in its tenant's queue, done, until it reaches the head (O(1))."""
        future = waiter.future
        if future.done() and not future.cancelled():
            return future.result()
        future.cancel()
        state = self.tenants.get(waiter.tenant)
        if state is not None:
            self._waits_less(waiter.tenant, state)
        if self.waiting:
            self._dispatch()  # it may have been the head that did not fit: the next may
        return "full"

    def _join(self, tenant: str) -> _Tenant:
        """``tenant`` becomes one of the n (its service record kept from before, if it was)."""
        state = self._idle.pop(tenant, None)
        if state is None:
            state = _Tenant(_monotonic())
        self.tenants[tenant] = state
        return state

    def _retire(self, tenant: str, state: _Tenant) -> None:
        """``tenant`` holds and waits for nothing: no longer one of the n; its record kept for its next request.
        Past :data:`IDLE_KEPT` idle records, those forgotten go (then the oldest quarter): amortised O(1)."""
        if self.tenants.get(tenant) is state:
            del self.tenants[tenant]
            self.window.left(tenant, _monotonic())
        if state.holdings:
            return
        idle = self._idle
        idle[tenant] = state
        if len(idle) > IDLE_KEPT:
            self._forget(idle)

    def _forget(self, idle: dict[str, _Tenant]) -> None:
        """Past :data:`IDLE_KEPT` idle records: those decayed to nothing go, then the oldest quarter."""
        now, service = _monotonic(), self.service
        for name in [name for name, kept in idle.items() if service.attained(kept.served, now) < FORGOTTEN]:
            del idle[name]
        for name in list(itertools.islice(idle, max(0, len(idle) - 3 * IDLE_KEPT // 4))):
            del idle[name]

    def _at_share(self, tenant: str, size: int) -> bool:
        """Is ``tenant`` refused by what it holds itself: its own cap (less than the pool), or at least its fair
        share beside others? (Alone against the whole pool, or holding nothing, the pool is what is busy.)"""
        holds = self.holds(tenant)
        if not holds:
            return False
        cap = self.cap(tenant)
        present = self._present(tenant)
        return (cap < self.capacity and holds + size > cap) or (
            present > 1 and fair_holds(self.capacity, holds, present)) or self._kept_from(tenant, holds, size)

    def _kept_from(self, tenant: str, holds: int, size: int) -> bool:
        """Would ``size`` more take ``tenant`` (holding ``holds``) into the headroom past its floor, beside
        others (headroom.py)?"""
        return (self.capacity - self.held - size < self.reserve and holds + size > self.floor
                and shared(self, tenant, _monotonic()))

    def _dispatch(self) -> None:
        """Room came back (or a waiter came): the least served waiting tenant's first waiter is given room while it
        fits; a tenant at its cap leaves the heap until it gives back (re-keyed then). A key is a lower bound of its
        tenant's service now (what a tenant holds counts on after its key was made): a head that holds anything is
        brought up to now and put back before it is served, so the head served is the least served now. O(log n) a
        grant, amortised."""
        heap = self._heap
        now = 0.0
        while heap and self.held < self.capacity:
            _, _, version, state, tenant = heap[0]
            if state.keyed != version or not state.waiting or self.tenants.get(tenant) is not state:
                heapq.heappop(heap)  # stale
                continue
            if not now:
                now = _monotonic()
            if state.holds and state.at != now:  # its key lags what it has held since: brought up to now
                self._accrue(state, now)
                self._key(tenant, state)
                heap = self._heap
                continue
            queue = state.queue
            assert queue is not None  # it waits
            while queue[0].future.done():  # withdrawn
                queue.popleft()
            waiter = queue[0]
            if waiter.size > self.capacity - self.held:
                return  # the least served waits for room to fit it: nobody passes it
            if self.capacity - self.held - waiter.size < self.reserve and not may_dip(
                    self, tenant, state.holds, waiter.size, now):
                heapq.heappop(heap)  # past its floor into the headroom: set aside until room comes above it
                state.keyed = 0
                set_aside(self, tenant, state, now)
                continue
            if state.holds and state.holds + waiter.size > self.cap(tenant):
                heapq.heappop(heap)
                state.keyed = 0  # at its cap: waits for its own work to end (give re-keys it)
                continue
            heapq.heappop(heap)
            queue.popleft()
            self._accrue(state, now)
            state.holds += waiter.size
            self.held += waiter.size
            state.waiting -= 1
            self.waiting -= 1
            state.keyed = 0
            waiter.future.set_result(None)
            if state.waiting:
                self._key(tenant, state)
                heap = self._heap
            else:
                state.queue = None

    def _evict_for(self, tenant: str, state: _Tenant) -> bool:
        """The queue is full: refuse the newest waiter of the tenant holding and waiting most, if that is more
        than ``tenant`` holds and waits (True: there is now a place). A scan of the waiting tenants (the rare
        full-queue path)."""
        mine = state.holds + state.waiting
        worst, worst_state, most = "", None, mine
        for name, other in self.tenants.items():
            if other.waiting and other.holds + other.waiting > most and name != tenant:
                worst, worst_state, most = name, other, other.holds + other.waiting
        if worst_state is None:
            return False
        queue = worst_state.queue
        assert queue is not None  # it waits
        while queue[-1].future.done():
            queue.pop()
        newest = queue.pop()
        newest.future.set_result("queue")
        self._waits_less(worst, worst_state)
        return True

    def _waits_less(self, tenant: str, state: _Tenant) -> None:
        """One waiter of ``tenant``'s leaves the queue unserved: its queue let go with its last, and the tenant with
        it when it holds nothing either."""
        state.waiting -= 1
        self.waiting -= 1
        if not state.waiting:
            state.queue = None
            state.keyed = 0
            if state.holds <= 0:
                self._retire(tenant, state)

    # -- taking back (egress connections; the memory backstop): reclaim.py, which reads these -----------------
    def force(self, tenant: str, size: int) -> None:
        """``size`` for ``tenant`` past the capacity, while room taken back for it comes back (egress)."""
        state = self.tenants.get(tenant)
        if state is None:
            state = self._join(tenant)
        self._accrue(state, _monotonic())
        state.holds += size
        self.held += size

    def being_taken_back(self) -> int:
        """How many holdings are being taken back and have not yet given their room back (their work stopping)."""
        return len(self._taking)
