"""One memory budget for the requests a process holds at once, so a burst of large ones is answered 503 rather than
the pod being killed for memory with every stream in flight — and shared, so that no caller can take it all.

What a request holds is judged from its body before it is parsed, by its shape (fairness/memory_charge.py: its
bytes and its JSON objects, counted as they arrive: a long string costs three times its bytes, a tiny item a thousand
bytes); what it loads besides (a chained history, a conversation's items) is predicted from the store and reserved
before it is loaded (:meth:`Held.reserve`). Bytes of no known shape (a file's, a program's) cost
:data:`COST_PER_BODY_BYTE` each (:meth:`MemoryBudget.reserve`). A request reserves as its body's bytes arrive
(services/tenancy/body_admission.py), a step of :data:`STEP_COST` at a time, not its declared total up front: a
connection that declares 64 MiB and sends one byte holds one step, not 192 MiB (:class:`Held`). The HTTP door
reserves for the handler's life (adapters/http/params.py, limits.py), the ext_proc door for the gRPC stream's
(adapters/extproc/request_phase.py), and a WebSocket turn from the moment its frame is queued until the turn ends.

Each holder (the tenant; with ``RESPONSES_BRIDGE_AUTH=none``, the caller's key: :meth:`MemoryBudget.holder`) is admitted
by the fair-share rule every shared pool uses (fairness/share.py): alone it may hold its share of the budget
(``RESPONSES_BRIDGE_MEMORY_BUDGET_SHARE``, half by default); with the budget full, new work waits in a bounded queue
(:data:`QUEUE`) up to :data:`WAIT_SECONDS` for room, and room freed goes first to the waiting holder served least
lately (byte-seconds, decayed) — a request in flight is never ended for another's share (its reservation is not
resumable: it would be thrown away) — then gets a 503 with ``Retry-After`` (the openai SDKs retry it):
``memory_share_exceeded`` for a holder holding at least its fair share, ``server_overloaded`` otherwise.
A request larger than a share runs when its holder holds nothing else, rather than never. How long a body may take
to arrive is bounded (body_pace.py), so an idle connection gives its steps back. Real memory is watched
too (memory_watch.py): past its high watermark the budget refuses new room
(:attr:`MemoryBudget.refusing`) to the holders that hold some — a holder holding nothing still gets a small
request's room (:meth:`MemoryBudget.refuses`).

The budget defaults to half of what the process may use: the cgroup's memory limit (a container's, a pod's), else
the machine's memory, shared among the workers.
"""

from __future__ import annotations

import asyncio

import structlog

from ...fairness.headroom import MEMORY_FLOOR, MEMORY_HEADROOM
from ...fairness.preemption import PREEMPTED, current_task
from ...fairness.share import FairPool, Refused
from ...observability.metrics import MEMORY_HELD, MEMORY_PREEMPTED, MEMORY_REFUSED, setter
from ...protocol.errors import APIError
from ...store.base import DEFAULT_TENANT
from .identity import caller_holder

OVERLOADED = "server_overloaded"
SHARE_EXCEEDED = "memory_share_exceeded"
RETRY_LATER = frozenset((OVERLOADED, SHARE_EXCEEDED, PREEMPTED))
"""The codes of the budget's 503s (and of work the memory backstop ended), answered with ``Retry-After``."""
COST_PER_BODY_BYTE = 30
"""Budget bytes per byte of no known shape (:meth:`MemoryBudget.reserve`): the costliest shape's, 100,000 tiny items
parsed, translated and stored (a body's own cost is judged by its shape: fairness/memory_charge.py)."""
WAIT_SECONDS = 2.0
DEFAULT_SHARE = 0.5
STEP_BYTES = 64 * 1024
"""64 KiB of a body of the costliest shape: :data:`STEP_COST` is what they cost."""
BYSTANDER_BYTES = 4 << 20
"""The most a holder holding nothing may take while the backstop acts (:meth:`MemoryBudget.refuses`): a small
request's reservation (a few of its body's steps, :data:`STEP_COST` each), far under the backstop's margin."""
QUEUE = 1024
"""Requests that may wait for room at once; past it the tenant waiting most loses its newest place
(fairness/share.py)."""
log = structlog.get_logger("responses_bridge.memory")
STEP_COST = COST_PER_BODY_BYTE * STEP_BYTES
"""Budget bytes reserved at a time as a body arrives (2 MiB): a body still arriving holds what its bytes so far
cost, rounded up to it; a whole body holds its cost exactly."""
HELD = setter(MEMORY_HELD)  # set twice a request: without the labels check of Gauge.set


def overloaded(what: str = "") -> APIError:
    MEMORY_REFUSED.inc()
    return APIError(503, f"{what}The server is holding as much request memory as it may (RESPONSES_BRIDGE_MEMORY_"
                    "BUDGET_BYTES); retry shortly.", type="server_error", code=OVERLOADED)


def share_exceeded(share: float, what: str = "") -> APIError:
    MEMORY_REFUSED.inc()
    return APIError(503, f"{what}This caller's requests in flight hold its fair share of the server's request "
                    f"memory (alone at most {share:.0%} of it: RESPONSES_BRIDGE_MEMORY_BUDGET_SHARE; beside other "
                    "callers an equal part of it); other callers are still served. Retry when some of them have "
                    "ended.", type="server_error", code=SHARE_EXCEEDED)


def _loading(what: str, size: int) -> str:
    """The start of a refusal of what a request would load: what, and its size."""
    return f"This request would load {what} (about {size / (1 << 20):.1f} MiB of memory held): "


def too_large_to_load(what: str, size: int, room: int) -> APIError:
    """What a request would load is more than one caller may hold alone beside the request (``room`` left): it
    never fits, so no retry."""
    MEMORY_REFUSED.inc()
    return APIError(400, f"{_loading(what, size)}more than one caller may hold of the server's request memory "
                    f"beside the request itself ({max(0, room) / (1 << 20):.1f} MiB: RESPONSES_BRIDGE_MEMORY_BUDGET_"
                    "BYTES × RESPONSES_BRIDGE_MEMORY_BUDGET_SHARE, less what the request holds). Continue from a "
                    "shorter history, or reference fewer or smaller items.", code="history_too_large")


class Reservation:
    """Bytes of the budget one request holds for one holder; :meth:`release` is idempotent, so every exit path may
    call it. ``task``: the work that holds it, ended if the bridge takes the room back (fairness/share.py)."""

    __slots__ = ("_budget", "bytes", "holder", "task")

    def __init__(self, budget: MemoryBudget | None, size: int, holder: str = DEFAULT_TENANT) -> None:
        self._budget = budget
        self.bytes = size
        self.holder = holder
        self.task: asyncio.Task[object] | None = None
        if budget is not None and size:
            self.task = current_task()
            budget.pool.enlist(holder, self)

    @property
    def bounded(self) -> bool:
        return self._budget is not None and self._budget.total > 0

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget._give_back(self.holder, self.bytes, self)
            # the task no longer needs finding: it held this reservation in its context (memory_charge.HOLDING),
            # a cycle (task, context, holding, reservation) that only a full collection freed with all it held
            self.task = None

    def grow(self, size: int) -> None:
        """``size`` bytes more the request already holds (what it loaded: fairness/memory_charge.py), charged at once
        past any share or the budget; nothing once released."""
        budget = self._budget
        if budget is not None and size > 0 and budget._hold(self.holder, size):
            self.bytes += size

    async def reserve(self, size: int, what: str) -> None:
        """``size`` bytes more before the request loads them (fairness/memory_charge.py): from its holder's room,
        waiting for it, or the 503 naming ``what``; nothing once released."""
        budget = self._budget
        if budget is not None and size > 0:
            self.bytes += await budget._take_loading(self.holder, size, what, self.bytes)

    def shrink(self, size: int) -> None:
        """Give back ``size`` of what it holds (at most all of it): room reserved for a bound the work did not come
        to hold (a file's text: services/files/inputs.py); nothing once released."""
        budget = self._budget
        size = min(size, self.bytes)
        if budget is not None and size > 0:
            self.bytes -= size
            budget._give_back(self.holder, size)


NOTHING = Reservation(None, 0)
"""What a request without a body (or a process without a budget) holds."""


class Held:
    """What one request holds of the budget, grown by whoever reads its body as the bytes arrive (:meth:`cover`)
    and given back by whoever started the request, however it ends."""

    __slots__ = ("_budget", "_reservation", "covered", "holder")

    def __init__(self, budget: MemoryBudget, holder: str = DEFAULT_TENANT) -> None:
        self._budget = budget
        self.holder = holder
        self._reservation = NOTHING
        self.covered = 0  # budget bytes of its body the reservation pays for

    def try_cover(self, cost: int) -> bool:
        """Covered already, or made so without waiting: a body costing ``cost`` budget bytes so far (at most a
        share: the largest runs alone rather than never). False: :meth:`cover` must wait for room."""
        budget = self._budget
        if cost <= self.covered or not budget.total:
            return True
        extra = min(cost, budget.share_bytes) - self.covered
        if extra <= 0:
            return True
        if (budget.refusing and budget.refuses(self.holder, extra)) or not budget.pool.try_take(self.holder, extra):
            return False
        HELD(float(budget.pool.held))
        self._add(extra)
        return True

    async def cover(self, cost: int) -> None:
        """:meth:`try_cover`, waiting up to :data:`WAIT_SECONDS` for room; the 503 past it."""
        if self.try_cover(cost):
            return
        budget = self._budget
        extra = max(0, min(cost, budget.share_bytes) - self.covered)
        self._add(await budget._take(self.holder, extra))

    def settle(self, cost: int) -> None:
        """The body is whole and costs ``cost``: what its last step covered beyond that is given back (the room
        goes to whoever waits)."""
        spare = self.covered - min(cost, self._budget.share_bytes)
        reservation = self._reservation
        if spare > 0 and reservation is not NOTHING:
            self.covered -= spare
            reservation.bytes -= spare
            self._budget._give_back(self.holder, spare)

    def _add(self, extra: int) -> None:
        self.covered += extra
        self._hold(extra)

    def _hold(self, extra: int) -> None:
        if not extra:
            return
        if self._reservation is NOTHING:
            self._reservation = Reservation(self._budget, extra, self.holder)
        else:
            self._reservation.bytes += extra

    async def reserve(self, size: int, what: str) -> None:
        """``size`` bytes more before the request loads them (a chained history: fairness/memory_charge.py), from
        its holder's room: at once, or waiting in the budget's fair queue, else the 503 naming ``what`` and its
        size; a 400 for more than a caller may hold alone (it would never fit)."""
        budget = self._budget
        if budget.total and size > 0:
            self._hold(await budget._take_loading(self.holder, size, what, self._reservation.bytes))

    def grow(self, size: int) -> None:
        """``size`` bytes more the request already holds (fairness/memory_charge.py): its reservation grows, whatever
        the budget or its holder's share; nothing once released, nor for a request that held nothing (no body: it
        loads no history)."""
        self._reservation.grow(size)

    @property
    def bytes(self) -> int:
        return self._reservation.bytes

    @property
    def bounded(self) -> bool:
        return self._budget.total > 0

    def release(self) -> None:
        self._reservation.release()


class MemoryBudget:
    """The process's reservations against ``total`` bytes (0: no budget), each holder's admitted by the fair-share
    rule (fairness/share.py) with ``share`` of it as what one holder may hold alone.
    ``by_client_key``: there are no tenants (``auth: none``), so a caller's key tells callers apart
    (:meth:`holder`). ``queue``: how many requests may wait for room at once."""

    def __init__(self, total: int, share: float = DEFAULT_SHARE, *, by_client_key: bool = False,
                 queue: int = QUEUE) -> None:
        self.total = total
        self.share = share
        self.share_bytes = max(1, int(total * share)) if total else 0
        self._by_client_key = by_client_key
        self.pool = FairPool(total, lambda holder: self.share_bytes, what="request memory", queue=queue,
                             headroom=min(MEMORY_HEADROOM, 1.0 - share), least_floor=MEMORY_FLOOR)  # headroom.py
        self.pool.on_preempt = _preempted
        self.refusing = False
        """Set by the memory backstop (memory_watch.py) while real memory is past its high watermark: no new
        room is given."""

    @property
    def held(self) -> int:
        return self.pool.held

    @property
    def by_holder(self) -> dict[str, int]:
        return {holder: state.holds for holder, state in self.pool.tenants.items() if state.holds}

    def holder(self, tenant: str, authorization: str | None) -> str:
        """Whose share a request counts against: its tenant; with no tenants (``auth: none``: everyone is the
        default tenant) the caller's ``Authorization`` (hashed: never kept), and callers that send none share one.
        Nothing checks such a key, so it separates well-behaved callers, not a hostile one sending many: give
        tenants keys (``auth: keys``) to bound those; the body pace still frees what idle connections hold."""
        if not self._by_client_key:
            return tenant
        return caller_holder(tenant, authorization)

    def refuses(self, holder: str, size: int) -> bool:
        """While the backstop acts (:attr:`refusing`), whether new room of ``size`` bytes is refused to ``holder``:
        to a holder that holds some already — the holders it is ending, so what it ends is not replaced — and to a
        room past :data:`BYSTANDER_BYTES`; never to a holder holding nothing for a small request. Refusing everyone
        refused a bystander's small requests all the while an attacker's were being ended (memory_watch.py)."""
        return size > BYSTANDER_BYTES or self.pool.holds(holder) > 0

    def held_by(self, holder: str) -> int:
        return self.pool.holds(holder)

    async def reserve(self, body_bytes: int, *, holder: str = DEFAULT_TENANT, wait: float = WAIT_SECONDS,
                      cost: int = COST_PER_BODY_BYTE) -> Reservation:
        """Room for ``body_bytes`` whose bytes are all here, ``cost`` budget bytes each (of no known shape: the
        costliest's); raises the 503 (:func:`overloaded`, :func:`share_exceeded`) when none came within ``wait``
        seconds."""
        if not self.total or not body_bytes:
            return NOTHING
        size = min(body_bytes * cost, self.share_bytes)  # the largest runs alone rather than never
        return Reservation(self, await self._take(holder, size, wait), holder)

    async def charge(self, holder: str, size: int) -> Reservation:
        """Room for ``size`` bytes the process is about to hold for ``holder`` besides a request's body (a
        subagent's context and turns: run/subagents.py), before they are held; at most a share. Raises the 503 as
        :meth:`reserve` does."""
        if not self.total or size <= 0:
            return NOTHING
        size = min(size, self.share_bytes)
        return Reservation(self, await self._take(holder, size), holder)

    def _try_take(self, holder: str, size: int) -> int | None:
        if not size:
            return 0
        if self.refusing and self.refuses(holder, size):
            return None
        if self.pool.try_take(holder, size):
            HELD(float(self.pool.held))
            return size
        return None

    async def _take(self, holder: str, size: int, wait: float = WAIT_SECONDS, *, what: str = "") -> int:
        """``size`` for ``holder``, waiting up to ``wait`` seconds; ``what``: the refusal's first words."""
        if not size:
            return 0
        if self.refusing and self.refuses(holder, size):
            raise overloaded(what)
        taken = self._try_take(holder, size)
        if taken is not None:
            return taken
        try:
            await self.pool.take(holder, size, wait)
        except Refused as refused:
            if refused.reason == "share":
                raise share_exceeded(self.share, what) from None
            raise overloaded(what) from None
        HELD(float(self.pool.held))
        return size

    async def _take_loading(self, holder: str, size: int, what: str, held: int) -> int:
        """:meth:`_take` of what a request holding ``held`` already will load: its refusals name ``what`` and its
        size; more than a caller may hold alone beside what the request holds is refused at once (it would never
        fit, however long it waited)."""
        if size + held > self.share_bytes:
            raise too_large_to_load(what, size, self.share_bytes - held)
        return await self._take(holder, size, what=_loading(what, size))

    def _hold(self, holder: str, size: int) -> bool:
        """``size`` bytes ``holder`` holds already (fairness/memory_charge.py), counted at once: past its cap, past the
        pool's capacity, while the backstop refuses — refusing memory held saves none; counted, it makes the
        holder's next requests wait or be refused by its share, and the backstop end its requests first. The
        pool's public counts, kept as :meth:`FairPool.try_take` keeps them (the pool's own ways to take wait or
        refuse). False: the holder holds nothing the pool knows of (a request without a body), nothing counted."""
        pool = self.pool
        state = pool.tenants.get(holder)
        if state is None:
            return False
        state.holds += size
        pool.held += size
        HELD(float(pool.held))
        return True

    def _give_back(self, holder: str, size: int, reservation: Reservation | None = None) -> None:
        if reservation is not None:
            self.pool.discharge(holder, reservation)
        self.pool.give(holder, size)
        HELD(float(self.pool.held))


def _preempted(holder: str, reason: str, size: int) -> None:
    """A request's room taken back (fairness, or the backstop): counted and logged (no tenant label: unbounded)."""
    MEMORY_PREEMPTED.labels(reason).inc()
    log.warning("memory_taken_back", reason=reason, holder_bytes=size,
                holder=holder if not holder.startswith("client:") else "client")
