"""Batch lines run on idle capacity only: the rule every line of a batch (``/v1/batches``) passes before it runs.

A batch is thousands of requests in no hurry, beside tenants who are. Its lines take the same pools as any request
(an upstream connection for each model call, the memory budget for its body, a sandbox or program slot for its
tools: fairness/share.py), and nothing in flight is ever taken back (share.py: its work would be thrown away). So
the only place a batch can give way is *before a line starts*, and that is where this gate stands. A line starts
only when all of these hold, checked in O(pools) at each start:

* **no interactive request is in flight beyond a small reserve**: :class:`Activity`'s count (every request either
  door admits, counted where the tenant's limits count it: services/tenancy/limits.py; a WebSocket connection only
  while a turn of it runs) is below ``reserve`` (``RESPONSES_BRIDGE_BATCH_INTERACTIVE_RESERVE``, 1 by default:
  no new line while any interactive request runs). The bridge's own CPU is shared too (two cores, one event loop a
  process): a line started beside an interactive request would slow it however many upstream connections are
  free;
* **nobody waits in a shared pool, and every pool has room above its headroom** (:class:`Watched`: the upstream
  connections, the memory budget, the program and sandbox slots once built): a line never takes a unit an
  interactive request waits for, and never the last part of a pool (headroom.py), which stays free for the next
  interactive arrival;
* **fewer than ``concurrency`` lines run** (``RESPONSES_BRIDGE_BATCH_CONCURRENCY``): an idle bridge runs lines at
  that concurrency, as fast as its upstream answers (work-conserving: nothing else holds a line back) — once it has
  been idle for :data:`QUIET_SECONDS`: while interactive requests came within that time, lines start in their gaps
  but at most :data:`BESIDE_INTERACTIVE` run at once. Lines in flight are what an arriving interactive request
  meets (their answers translated and stored on the same event loop and database), and between the steady
  requests of a person or an agent there are gaps enough to start a full concurrency of lines each time: measured
  (``scripts/bench batches``, a request every ~0.1 s), the interactive p95 beside a batch was 1.5× its p95 alone
  with every gap filled, and the batch ran as fast as on an idle bridge.

A line that started runs to its end (**in-flight lines are never thrown away**): an interactive request arriving
meanwhile is admitted by its pools as usual, and only the *next* line waits. The gate wakes when a line ends, when
the interactive count falls below the reserve (:meth:`Activity.leave` calls it, only while lines wait for that),
once the quiet may have passed (a timer), and every :data:`RECHECK_SECONDS` while a pool keeps it closed (the pools
have no hook; a poll only while lines wait, never on a request's path).

**Fair between tenants, then batches**: a free place goes to the waiting tenant with the fewest lines running (one
tenant's 50,000-line batch and another's 10-line one each get half of the places while both wait), ties in
round-robin order; within a tenant, its batches in round-robin; within a batch, its lines in order. O(tenants
waiting) per start: a scan of the tenants with lines waiting, a handful.

Per process: with ``serve --workers`` or replicas, each process's gate sees its own interactive requests and pools.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Literal, Protocol

from ..observability.batch_metrics import watch_gate

__all__ = ["RECHECK_SECONDS", "Activity", "Blocked", "IdleCapacity", "Watched"]

RECHECK_SECONDS = 0.05
"""While a pool keeps lines waiting (a waiter in it, or its free room at its headroom), how often the gate looks
again: pools say nothing when they empty, and a poll only while lines wait costs requests nothing."""
QUIET_SECONDS = 1.0
"""How long no interactive request may have come for the bridge to count as idle (lines at full concurrency)."""
BESIDE_INTERACTIVE = 1
"""Lines at once while interactive requests came within :data:`QUIET_SECONDS` (and fewer than the reserve are in
flight): the batch goes on beside light traffic, one line at a time."""

Blocked = Literal["interactive", "recent", "pool", "concurrency"]


class Watched(Protocol):
    """What the gate reads of a shared pool (share.py's FairPool): its size, what is held, who waits, the headroom."""

    capacity: int
    held: int
    waiting: int
    reserve: int


class Activity:
    """Interactive requests in flight in this process, every tenant's: one integer, raised and lowered where the
    doors already count a tenant's requests (services/tenancy/limits.py), so a plain request pays an increment and a
    decrement. ``listener``: called as one ends, set by the gate only while lines wait for the count to fall."""

    __slots__ = ("count", "entered", "listener")

    def __init__(self) -> None:
        self.count = 0
        self.entered = 0  # requests ever counted: the gate tells from it that one came since it last looked
        self.listener: Callable[[], None] | None = None

    def enter(self) -> None:
        self.count += 1
        self.entered += 1

    def leave(self) -> None:
        self.count -= 1
        if self.listener is not None:
            self.listener()


class _Tenant:
    __slots__ = ("batches", "running")

    def __init__(self) -> None:
        self.running = 0  # its lines holding a place now
        self.batches: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()  # batch id -> waiting lines


class IdleCapacity:
    """The gate of batch lines (the rule above). ``activity``: the interactive count; ``pools``: the shared pools
    to watch, asked at each check (some are built on first use); ``concurrency``: lines at once; ``reserve``: new
    lines start only while fewer interactive requests than this are in flight."""

    def __init__(self, activity: Activity, pools: Callable[[], Iterable[Watched]], *, concurrency: int,
                 reserve: int = 1, recheck: float = RECHECK_SECONDS, quiet: float = QUIET_SECONDS,
                 beside: int = BESIDE_INTERACTIVE) -> None:
        self.activity = activity
        self.pools = pools
        self.concurrency = max(1, concurrency)
        self.reserve = max(1, reserve)
        self.recheck = recheck
        self.quiet = quiet
        self.beside = max(1, min(beside, self.concurrency))
        self._entered = 0  # the interactive requests counted when the gate last looked
        self._active_at = float("-inf")  # when (loop time) it last saw one come or in flight
        self.running = 0
        self.waiting = 0  # lines waiting for a place, every tenant's
        self.started = 0  # lines given a place since the start (metrics, tests)
        self._tenants: dict[str, _Tenant] = {}  # tenants with lines running or waiting
        self._order: OrderedDict[str, None] = OrderedDict()  # tenants with lines waiting, round-robin order
        self._timer: asyncio.TimerHandle | None = None
        watch_gate(self)  # /metrics: lines running and waiting, the interactive count

    @property
    def interactive(self) -> int:
        """Interactive requests in flight now (the metrics show it beside the lines)."""
        return self.activity.count

    def line_slot(self, tenant: str, batch_id: str) -> _LineSlot:
        """Held while one line of ``tenant``'s batch ``batch_id`` runs: entered once the rule lets it start, left
        however the line ends (its place goes to the next waiting line)."""
        return _LineSlot(self, tenant, batch_id)

    def blocked(self) -> Blocked | None:
        """Why no line may start now (None: one may)."""
        if self.running >= self.concurrency:
            return "concurrency"
        activity = self.activity
        if activity.count >= self.reserve:
            return "interactive"
        if self.running >= self.beside and self._recently_active(activity):
            return "recent"
        for pool in self.pools():
            if pool.waiting or pool.capacity - pool.held <= pool.reserve:
                return "pool"
        return None

    def _recently_active(self, activity: Activity) -> bool:
        """Did an interactive request come (or run) within :attr:`quiet` seconds, as far as the gate has seen? It
        looks only here, at a line's start or end: a request that came while it did not look is counted from when
        it looks (late, never missed)."""
        now = asyncio.get_running_loop().time()
        if activity.entered != self._entered or activity.count:
            self._entered = activity.entered
            self._active_at = now
        return now - self._active_at < self.quiet

    # -- a line's place ----------------------------------------------------------------------------------------------
    def _try_start(self, tenant: str) -> bool:
        """A place at once, if nothing waits before it and the rule allows (the usual start on an idle bridge)."""
        if self.waiting or self.blocked() is not None:
            return False
        self._start(self._tenants.get(tenant) or self._tenants.setdefault(tenant, _Tenant()))
        return True

    def _start(self, state: _Tenant) -> None:
        state.running += 1
        self.running += 1
        self.started += 1

    async def _wait(self, tenant: str, batch_id: str) -> None:
        state = self._tenants.get(tenant) or self._tenants.setdefault(tenant, _Tenant())
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.batches.setdefault(batch_id, deque()).append(future)
        self._order[tenant] = None
        self.waiting += 1
        self._dispatch()
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():  # given its place as it was cancelled: passed on
                self._end(tenant)
            else:
                self._withdraw(tenant, state, batch_id, future)
            raise

    def _withdraw(self, tenant: str, state: _Tenant, batch_id: str, future: asyncio.Future[None]) -> None:
        """A line that stopped waiting (its batch cancelled, its process stopping) leaves the queue."""
        lines = state.batches.get(batch_id)
        if lines is None or future not in lines:
            return
        lines.remove(future)
        self.waiting -= 1
        if not lines:
            del state.batches[batch_id]
        if not state.batches:
            self._order.pop(tenant, None)
            if not state.running:
                del self._tenants[tenant]
        self._settle()

    def _end(self, tenant: str) -> None:
        """A line's place given back: the next waiting line may start."""
        self.running -= 1
        state = self._tenants.get(tenant)
        if state is not None:
            state.running -= 1
            if not state.running and not state.batches:
                del self._tenants[tenant]
        if self.waiting:
            self._dispatch()

    # -- who goes next -------------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Start waiting lines while the rule allows, the tenant with the fewest lines running first (round-robin
        among equals), its batches in turn; else arrange to look again when what blocks may have changed."""
        while self.waiting:
            why = self.blocked()
            if why is not None:
                self._watch(why)
                return
            self._start_next()
        self._settle()

    def _start_next(self) -> None:
        """The next line given its place (one whose task was cancelled meanwhile is passed over: its wait ends by
        itself, finding itself no longer queued)."""
        tenants = self._tenants
        chosen = min(self._order, key=lambda name: tenants[name].running)  # first of the least running: in turn
        state = tenants[chosen]
        batch_id, lines = next(iter(state.batches.items()))
        future = lines.popleft()
        self.waiting -= 1
        if lines:
            state.batches.move_to_end(batch_id)  # the tenant's next start is its next batch's
        else:
            del state.batches[batch_id]
        if state.batches:
            self._order.move_to_end(chosen)
        else:
            del self._order[chosen]
            if not state.running and future.done():
                del tenants[chosen]
        if not future.done():
            self._start(state)
            future.set_result(None)

    def _watch(self, why: Blocked) -> None:
        """Lines wait for ``why``: the interactive count's fall calls back; a pool is looked at again shortly, the
        quiet once it may have passed; a line's end dispatches by itself."""
        self.activity.listener = self._interactive_left if why == "interactive" else None
        if why in ("pool", "recent") and self._timer is None:
            loop = asyncio.get_running_loop()
            after = self.recheck if why == "pool" else max(0.001, self._active_at + self.quiet - loop.time())
            self._timer = loop.call_later(after, self._recheck)

    def _interactive_left(self) -> None:
        if self.activity.count < self.reserve:
            self._dispatch()

    def _recheck(self) -> None:
        self._timer = None
        if self.waiting:
            self._dispatch()

    def _settle(self) -> None:
        """Nothing waits (or nothing more can start for now): no callback stays on the interactive count."""
        if not self.waiting:
            self.activity.listener = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


class _LineSlot:
    """:meth:`IdleCapacity.line_slot`'s context: a place taken on entry, given back on exit, however the line ends."""

    __slots__ = ("_batch", "_gate", "_tenant")

    def __init__(self, gate: IdleCapacity, tenant: str, batch_id: str) -> None:
        self._gate = gate
        self._tenant = tenant
        self._batch = batch_id

    async def __aenter__(self) -> None:
        gate = self._gate
        if not gate._try_start(self._tenant):
            await gate._wait(self._tenant, self._batch)

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        self._gate._end(self._tenant)
