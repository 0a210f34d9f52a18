"""The one rule of every pool the tenants share (the memory budget, upstream calls, program slots, sandbox slots,
egress connections): max-min fair share, with preemption.

A rule that only admits cannot protect the next tenant: whatever it leaves free, k greedy tenants arriving one
after another shrink it (a geometric rule left 1/2, 1/6, 1/18 … of the pool, 64 KiB of 256 MiB after 8 tenants;
"a tenant holding none gets a free unit" let the k-th greedy tenant take the last one). Held work must be taken
back. The rule, with ``C`` the pool's capacity and ``n`` the tenants holding or waiting (the asker counted):

* a tenant asks for ``size``: it is served at once while the pool has room and it stays within ``cap`` (what one
  tenant may hold alone: the pool's share setting) — the pool is used fully while nobody else wants it;
* the pool is full and the asker holds less than ``C / n`` (its fair share): the bridge takes room back from the
  tenant holding the most above its ``C / n`` — its largest holding, the newest among equals (a request answered
  503 / a stream ended with ``response.failed``, code ``preempted_for_fairness``: preemption.py), until
  the asker fits; tenants at or under their share are never taken from, nor one that would not still hold more
  than the asker then holds — but for more tenants than units in a unit pool (``n > C``, every holder of one
  unit above its ``C / n < 1``): then a tenant holding nothing takes back the unit held longest of a tenant
  holding one (a greedy one's first), once held a quantum (a tenant served at most half as much lately: a greedy
  holder's served most, once held ``quantum / C``), and a tenant that lost one takes none back this way within
  a quantum (fair_tenure.py): units are time-shared rather than passed back and forth;
* otherwise the request waits in the pool's queue, bounded (:attr:`FairPool.queue`): room given back goes to the
  waiting tenant that holds least (among equals, the one it was taken back for, then first come first served);
  past the bound, the waiter of the tenant that holds and waits most is refused at once in its place (the asker
  itself when that is it), and a wait past the pool's own timeout is refused too — the refusal says the tenant's
  share when it holds at least its ``C / n``, the pool otherwise (a tenant holding nothing is never told it holds
  its share).

With n tenants wanting more, each converges to ``C / n``, whatever order they came in. The hot path (room free,
nobody waiting) is O(1): a count per tenant; the holders are scanned only when the pool is full.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal

import structlog

from .fair_tenure import Tenure
from .observability.metrics import POOL_PREEMPTED
from .preemption import PREEMPTED, current_task, take_back_task, was_taken_back

__all__ = ["PREEMPTED", "FairPool", "FairSlots", "Reason", "Refused", "fair_holds"]

Reason = Literal["share", "full", "queue"]
log = structlog.get_logger("responses_bridge.fair_share")
IDLE_KEPT = 256


def _counted(what: str) -> Callable[[str, str, int], None]:
    def preempted(tenant: str, reason: str, size: int) -> None:
        POOL_PREEMPTED.labels(what).inc()
        log.warning("fair_share_taken_back", pool=what, reason=reason, size=size)
    return preempted


class _Tenant:
    __slots__ = ("holdings", "holds", "reclaiming", "refused_at", "taken_at", "waiting")

    def __init__(self) -> None:
        self.holds = 0
        self.waiting = 0
        self.reclaiming = 0
        self.taken_at = -1e18  # when a holding of its was last taken back (monotonic)
        self.refused_at = -1e18  # when a request of its was last refused by the full queue: it wants more
        self.holdings: dict[Any, int] = {}  # what may be taken back (oldest first): how many times it is held


class _Waiter:
    __slots__ = ("future", "owed", "size", "tenant")

    def __init__(self, tenant: str, size: int) -> None:
        self.tenant = tenant
        self.size = size
        self.owed = False  # room is being taken back for it: it is served first among those holding as little
        self.future: asyncio.Future[Reason | None] = asyncio.get_running_loop().create_future()


class Refused(Exception):
    """No room came: ``reason`` is ``share`` (the tenant holds at least its fair share), ``full`` (the pool is
    full of others' work it may not take back) or ``queue`` (the queue is at its bound)."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


def fair_holds(capacity: int, holds: int, tenants: int) -> bool:
    """Does a tenant holding ``holds`` hold at least its fair share ``capacity / tenants``? (In integers.)"""
    return holds * tenants >= capacity


class FairPool:
    """``capacity`` (units or bytes) shared by the rule above; ``cap(tenant)``: what one tenant may hold alone;
    ``what``: the pool's name in a preempted request's error ("upstream connections"); ``queue``: how many requests
    may wait at once. ``units``: the holdings are the holders' tasks themselves (one unit each), else objects with
    ``bytes`` and ``task`` (a memory reservation). ``quantum``: a holding's tenure before it may be taken back for
    a tenant holding nothing (None: the process's, ``RESPONSES_BRIDGE_FAIR_SHARE_QUANTUM``)."""

    def __init__(self, capacity: int, cap: Callable[[str], int], *, what: str, queue: int,
                 units: bool = False, quantum: float | None = None) -> None:
        self.capacity = capacity
        self.cap = cap
        self.what = what
        self.queue = max(1, queue)
        self.units = units
        self.held = 0
        self.reclaiming = 0
        self.tenants: dict[str, _Tenant] = {}  # the n: tenants holding or waiting
        self._taking: dict[Any, int] = {}  # holdings being taken back: the room each will give back
        self._idle: dict[str, _Tenant] = {}
        self.waiters: list[_Waiter] = []
        self.preempted = 0
        self.tenure = Tenure(quantum)
        self.since = self.tenure.since  # the stamps (fair_tenure.py): empty while the pool is not contended
        self.on_preempt: Callable[[str, str, int], None] | None = None  # (tenant, why, size): metrics and a log

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
        if self.waiters or size > self.capacity - self.held:
            return None
        state = self.tenants.get(tenant)
        holds = state.holds if state is not None else 0
        if holds and holds + size > self.cap(tenant):  # past its cap alone (a first holding larger than it runs)
            return None
        if state is None:  # _join, inlined: every request's first holding comes here
            state = self._idle.pop(tenant, None) or _Tenant()
            self.tenants[tenant] = state
        state.holds += size
        self.held += size
        return state

    def give(self, tenant: str, size: int) -> None:
        """``size`` of ``tenant``'s back; the waiters it fits served."""
        self.held -= size
        state = self.tenants.get(tenant)
        if state is not None:
            state.holds -= size
            if state.holds <= 0 and not state.waiting:  # _retire, inlined: every request's last give comes here
                del self.tenants[tenant]
                if len(self._idle) < IDLE_KEPT and not state.holdings:
                    state.reclaiming = 0
                    self._idle[tenant] = state
        if self.waiters:
            self._dispatch()

    # -- holdings (what may be taken back) --------------------------------------------------------------------------
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
        if not count:
            return
        if count > 1:
            state.holdings[holding] = count - 1
        elif self.since:
            self.tenure.ended(tenant, holding)
        self._reclaimed(state, holding)

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

    def _reclaimed(self, state: _Tenant, holding: Any) -> None:
        if state.reclaiming:
            size = self._taking.pop(holding, 0)
            state.reclaiming -= size
            self.reclaiming -= size

    def _size(self, holding: Any) -> int:
        return 1 if self.units else int(holding.bytes)

    def _task(self, holding: Any) -> asyncio.Task[Any] | None:
        return holding if self.units else holding.task

    # -- waiting ---------------------------------------------------------------------------------------------------
    async def take(self, tenant: str, size: int, wait: float) -> None:
        """``size`` for ``tenant``: at once, after taking back from a tenant above its share, or once given back
        within ``wait`` seconds; raises :class:`Refused` saying why not."""
        if self.try_take(tenant, size):
            return
        state = self.tenants.get(tenant)
        if state is None:
            state = self._join(tenant)
        if not self.waiters and self._fits(tenant, state, size):
            self._grant(state, size)
            return
        if len(self.waiters) >= self.queue and not self._evict_for(tenant, state):
            state.refused_at = time.monotonic()
            self._leave_if_idle(tenant, state)
            raise Refused("queue")
        waiter = _Waiter(tenant, size)
        self.waiters.append(waiter)
        state.waiting += 1
        self._dispatch()  # served at once if it fits (the least holding first), else room taken back for it
        try:
            async with asyncio.timeout(wait):
                refused = await asyncio.shield(waiter.future)
        except TimeoutError:
            refused = self._withdraw(waiter)
            if refused is None:  # granted as the time ran out: held
                return
            if refused == "full":  # no room came: the tenant's share, or others' work it may not take back
                refused = "share" if self._at_share(tenant, state, size) else "full"
        except BaseException:  # the request went away while it waited: nothing may stay held for it
            if self._withdraw(waiter) is None:
                self.give(tenant, size)
            raise
        if refused is not None:
            raise Refused(refused)

    def _withdraw(self, waiter: _Waiter) -> Reason | None:
        """Stop waiting: None if the room was granted meanwhile (it is then held), else the refusal."""
        future = waiter.future
        if future.done() and not future.cancelled():
            return future.result()
        future.cancel()
        if waiter in self.waiters:
            self._unqueue(waiter)
        return "full"

    def _unqueue(self, waiter: _Waiter) -> None:
        self.waiters.remove(waiter)
        state = self.tenants.get(waiter.tenant)
        if state is not None:
            state.waiting -= 1
            self._leave_if_idle(waiter.tenant, state)

    def _leave_if_idle(self, tenant: str, state: _Tenant) -> None:
        if state.holds <= 0 and not state.waiting and self.tenants.get(tenant) is state:
            self._retire(tenant, state)

    def _join(self, tenant: str) -> _Tenant:
        """``tenant`` becomes one of the n (its state kept from before, if it was)."""
        state: _Tenant | None = self._idle.pop(tenant, None)
        if state is None:
            state = _Tenant()
        self.tenants[tenant] = state
        return state

    def _retire(self, tenant: str, state: _Tenant) -> None:
        """``tenant`` holds and waits for nothing: no longer one of the n; its state kept for its next request (a
        few: no allocation on the hot path for a tenant sending one request after another)."""
        del self.tenants[tenant]
        if len(self._idle) < IDLE_KEPT and not state.holdings:
            state.reclaiming = 0
            self._idle[tenant] = state

    def _at_share(self, tenant: str, state: _Tenant, size: int) -> bool:
        """Is ``tenant`` refused by what it holds itself: its own cap (less than the pool), or at least its fair
        share beside others? (Alone against the whole pool, the pool is what is full.)"""
        if not state.holds:
            return False
        cap = self.cap(tenant)
        present = self._present(tenant)
        return (cap < self.capacity and state.holds + size > cap) or (
            present > 1 and fair_holds(self.capacity, state.holds, present))

    def _fits(self, tenant: str, state: _Tenant, size: int) -> bool:
        return size <= self.capacity - self.held and (state.holds + size <= self.cap(tenant) or not state.holds)

    def _grant(self, state: _Tenant, size: int) -> None:
        state.holds += size
        self.held += size

    def _dispatch(self) -> None:
        """Room came back: the waiters it fits, the tenants holding least first (among equals, one room is being
        taken back for first, then first come); then room taken back for the first one left, if it holds less
        than its share. In a unit pool, among tenants holding as little, one never taken from comes first, then
        the one taken from longest ago; among equals, one not refused by the full queue lately, the least served,
        the least claiming (fair_tenure.py; with more tenants than units the units go round them: _take_turn)."""
        tenants = self.tenants
        rank = self.tenure.ranking(tenants) if self.units else lambda waiter: ()  # least served first: fair_tenure
        order = sorted(self.waiters, key=lambda waiter: (tenants[waiter.tenant].holds, not waiter.owed, rank(waiter)))
        for waiter in order:
            state = tenants[waiter.tenant]
            if waiter.future.done():
                continue
            if self._fits(waiter.tenant, state, waiter.size):
                self._grant(state, waiter.size)
                self.waiters.remove(waiter)
                state.waiting -= 1
                waiter.future.set_result(None)
            elif self.held >= self.capacity:
                break
        if self.waiters:
            self._reclaim_for(min(self.waiters, key=lambda waiter: (tenants[waiter.tenant].holds, rank(waiter))))

    def _wake(self) -> None:
        """A holding's quantum has passed while tenants wait: room may now be taken back for one."""
        if self.waiters:
            self._dispatch()

    def _evict_for(self, tenant: str, state: _Tenant) -> bool:
        """The queue is full: refuse the newest waiter of the tenant holding and waiting most, if that is more
        than ``tenant`` holds and waits (True: there is now a place)."""
        tenants = self.tenants
        mine = state.holds + state.waiting
        worst = max(self.waiters, key=lambda waiter: tenants[waiter.tenant].holds + tenants[waiter.tenant].waiting)
        theirs = tenants[worst.tenant]
        if worst.tenant == tenant or theirs.holds + theirs.waiting <= mine:
            return False
        newest = next(waiter for waiter in reversed(self.waiters) if waiter.tenant == worst.tenant)
        theirs.refused_at = time.monotonic()
        self._unqueue(newest)
        newest.future.set_result("queue")
        return True

    def _reclaim_for(self, waiter: _Waiter) -> None:
        if self.make_room(waiter.tenant, waiter.size):
            waiter.owed = True

    def make_room(self, tenant: str, size: int) -> bool:
        """Take back room for ``size`` of ``tenant``'s if it holds less than its fair share and the room free or
        already being taken back is short of it; True if anything is being taken back for it."""
        state = self.tenants.get(tenant)
        holds = state.holds if state is not None else 0
        tenants = self._present(tenant)
        if fair_holds(self.capacity, holds, tenants) or (holds and holds + size > self.cap(tenant)):
            return False  # at its fair share, or at its own cap: nothing taken back that it could not use
        took = False
        while self.capacity - self.held + self.reclaiming < size:
            chosen, most = None, holds + size  # taken from only while it would still hold more than the asker
            for name, other in self.tenants.items():  # the pool is full: the one scan
                left = other.holds - other.reclaiming
                if name != tenant and other.holdings and left * tenants > self.capacity and left > most:
                    chosen, most = name, left
            if chosen is not None:
                if not self._take_back(chosen):
                    return took
            elif holds or not self.units or not self._take_turn(tenant, state, size, tenants):
                return took
            took = True
        return took

    def _take_turn(self, tenant: str, state: _Tenant | None, size: int, tenants: int) -> bool:
        """More tenants than units: every holder of one unit is above its ``C / n``, and ``tenant`` holds nothing
        (a unit pool's only: a memory reservation is not a unit, and bytes are shared out by the rule above).
        Takes back the holding held longest among those held at least a quantum (fair_tenure.py) — unless
        ``tenant`` lost one itself within a quantum, or the pool's last turn was less than ``quantum / C`` ago —
        else wakes the pool when the first will have been."""
        now = time.monotonic()
        tenure = self.tenure
        if state is not None and now - state.taken_at < tenure.quantum:
            tenure.wake(state.taken_at + tenure.quantum, self._wake)
            return False
        if now < tenure.next_turn:
            tenure.wake(tenure.next_turn, self._wake)
            return False
        candidates = ((name, holding) for name, other in self.tenants.items()
                      if name != tenant and other.holds - other.reclaiming == size and size * tenants > self.capacity
                      for holding in other.holdings if holding not in self._taking and self._size(holding) == size
                      and self._task(holding) is not None and not was_taken_back(self._task(holding)))
        found = tenure.turn(tenant, candidates, now, self.capacity, self._wake, self.tenants)  # the full pool: one scan
        if found is None or not self.take_back(found[0], found[1], PREEMPTED):
            return False
        tenure.next_turn = now + tenure.quantum / max(1, self.capacity)
        return True

    def force(self, tenant: str, size: int) -> None:
        """``size`` for ``tenant`` past the capacity, while room taken back for it comes back (a pool that cannot
        wait: egress connections are admitted or refused as they are accepted)."""
        state = self.tenants.get(tenant)
        if state is None:
            state = self._join(tenant)
        self._grant(state, size)

    def _take_back(self, tenant: str) -> bool:
        """End the largest (the newest of equals) of ``tenant``'s holdings not already being taken back."""
        state = self.tenants[tenant]
        best, best_size = None, -1
        for holding in state.holdings:
            task = self._task(holding)
            size = self._size(holding)
            if task is not None and holding not in self._taking and not was_taken_back(task) and size >= best_size:
                best, best_size = holding, size
        if best is None:
            return False
        return self.take_back(tenant, best, PREEMPTED)

    def take_back(self, tenant: str, holding: Any, reason: str) -> bool:
        """End ``holding`` of ``tenant``'s (its room comes back when its work has stopped)."""
        size = self._size(holding)
        if holding in self._taking or not take_back_task(self._task(holding), self.what):
            return False
        self._taking[holding] = size
        state = self.tenants[tenant]
        state.taken_at = time.monotonic()
        state.reclaiming += size
        self.reclaiming += size
        self.preempted += 1
        if self.on_preempt is not None:
            self.on_preempt(tenant, reason, size)
        return True

    def largest(self) -> tuple[str, Any] | None:
        """The largest holding of all not already being taken back (the newest among equals: it has done the least
        work): the memory backstop's next to end."""
        found: tuple[str, Any] | None = None
        most = -1
        for tenant, state in self.tenants.items():
            for holding in state.holdings:
                size = self._size(holding)
                if size >= most and holding not in self._taking and self._task(holding) is not None \
                        and not was_taken_back(self._task(holding)):
                    found, most = (tenant, holding), size
        return found


class FairSlots:
    """``total`` slots, one at a time, by the rule above; ``share(tenant)``: how many one tenant may hold alone (at
    least 1). The pool of sandbox slots, program slots and upstream connections. A slot is held by the task that
    acquired it: taking it back cancels that task (:func:`take_back_task`)."""

    def __init__(self, total: int, share: Callable[[str], int], *, what: str = "slots",
                 queue: int | None = None, quantum: float | None = None) -> None:
        self.total = total
        self.pool = FairPool(total, share, what=what, queue=queue if queue is not None else 4 * total, units=True,
                             quantum=quantum)
        self.pool.on_preempt = _counted(what)

    @property
    def busy(self) -> int:
        return self.pool.held

    def held(self, tenant: str) -> int:
        return self.pool.holds(tenant)

    def try_acquire(self, tenant: str) -> bool:
        """A slot for ``tenant`` at once, if nobody waits and the pool has one free within its share."""
        state = self.pool.try_take(tenant, 1)
        if state is None:
            return False
        task = current_task()
        if task is not None:
            state.holdings[task] = state.holdings.get(task, 0) + 1
        return True

    async def acquire(self, tenant: str, timeout: float) -> bool:
        """Wait for a slot at most ``timeout`` seconds (taking one back from a tenant above its fair share when
        ``tenant`` holds less than its own): True once it is ``tenant``'s, False if none came."""
        return await self.acquire_or_why(tenant, timeout) is None

    async def acquire_or_why(self, tenant: str, timeout: float) -> Reason | None:
        """:meth:`acquire`, saying why not (:class:`Refused`'s reasons) instead of False."""
        if self.try_acquire(tenant):
            return None
        try:
            await self.pool.take(tenant, 1, timeout)
        except Refused as refused:
            return refused.reason
        task = current_task()
        self.pool.enlist(tenant, task)
        self.pool.tenure.stamp(task)  # given after a wait: its tenure starts now (fair_tenure.py)
        return None

    def release(self, tenant: str) -> None:
        pool = self.pool
        state = pool.tenants.get(tenant)
        if state is not None and state.holdings:
            task = current_task()
            count = state.holdings.get(task, 0) if task is not None else 0
            if count == 1 and not state.reclaiming:  # the usual release: by the task that took it, nothing owed
                del state.holdings[task]
                if pool.since:
                    pool.tenure.ended(tenant, task)
            else:
                pool.discharge_current(tenant)
        pool.give(tenant, 1)
