"""One memory budget for the requests a process holds at once, so a burst of large ones is answered 503 rather than
the pod being killed for memory with every stream in flight — and shared, so that no caller can take it all.

What a request holds is judged from its body before it is parsed: :data:`COST_PER_BODY_BYTE` times its bytes (a
request's parsed items, translation and stored rows peak at about 30 times the JSON they came in, measured for
100,000 tiny items: the costliest shape; ordinary text costs less); what it loads besides (a chained history, a
conversation's items) grows its reservation as it is loaded (:meth:`Held.grow`: fairness/memory_charge.py). A request
reserves as its body's bytes arrive,
in steps of :data:`STEP_BYTES` (never more than its declared length), not the declared total up front: a connection
that declares 64 MiB and sends one byte holds one step, not 1.9 GiB (:class:`Held`). The HTTP door reserves for the
handler's life (adapters/http/params.py, limits.py), the ext_proc door for the gRPC stream's
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
(:attr:`MemoryBudget.refusing`).

The budget defaults to half of what the process may use: the cgroup's memory limit (a container's, a pod's), else
the machine's memory, shared among the workers.
"""

from __future__ import annotations

import asyncio
import hashlib

import structlog

from ...fairness.headroom import MEMORY_FLOOR, MEMORY_HEADROOM
from ...fairness.preemption import PREEMPTED, current_task
from ...fairness.share import FairPool, Refused
from ...observability.metrics import MEMORY_HELD, MEMORY_PREEMPTED, MEMORY_REFUSED, setter
from ...protocol.errors import APIError
from ...store.base import DEFAULT_TENANT

OVERLOADED = "server_overloaded"
SHARE_EXCEEDED = "memory_share_exceeded"
RETRY_LATER = frozenset((OVERLOADED, SHARE_EXCEEDED, PREEMPTED))
"""The codes of the budget's 503s (and of work the memory backstop ended), answered with ``Retry-After``."""
COST_PER_BODY_BYTE = 30
WAIT_SECONDS = 2.0
DEFAULT_SHARE = 0.5
STEP_BYTES = 64 * 1024
QUEUE = 1024
"""Requests that may wait for room at once; past it the tenant waiting most loses its newest place
(fairness/share.py)."""
log = structlog.get_logger("responses_bridge.memory")
HELD = setter(MEMORY_HELD)  # set twice a request: without the labels check of Gauge.set
"""Body bytes reserved at a time as a body arrives (about 2 MiB of the budget)."""


def overloaded() -> APIError:
    MEMORY_REFUSED.inc()
    return APIError(503, "The server is holding as much request memory as it may (RESPONSES_BRIDGE_MEMORY_BUDGET_"
                    "BYTES); retry shortly.", type="server_error", code=OVERLOADED)


def share_exceeded(share: float) -> APIError:
    MEMORY_REFUSED.inc()
    return APIError(503, f"This caller's requests in flight hold its fair share of the server's request memory "
                    f"(alone at most {share:.0%} of it: RESPONSES_BRIDGE_MEMORY_BUDGET_SHARE; beside other callers "
                    "an equal part of it); other callers are still served. Retry when some of them have ended.",
                    type="server_error", code=SHARE_EXCEEDED)


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

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget._give_back(self.holder, self.bytes, self)

    def grow(self, size: int) -> None:
        """``size`` bytes more the request already holds (what it loaded: fairness/memory_charge.py), charged at once
        past any share or the budget; nothing once released."""
        budget = self._budget
        if budget is not None and size > 0 and budget._hold(self.holder, size):
            self.bytes += size


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
        self.covered = 0  # body bytes the reservation pays for

    def _target(self, received: int, declared: int | None) -> int:
        target = -(-received // STEP_BYTES) * STEP_BYTES
        return min(target, declared) if declared is not None and declared >= received else target

    def try_cover(self, received: int, declared: int | None = None) -> bool:
        """Covered already, or made so without waiting: ``received`` body bytes (rounded up to a step, at most
        ``declared``). False: :meth:`cover` must wait for room."""
        budget = self._budget
        if received <= self.covered or not budget.total:
            return True
        # _target, _cost and _add inlined: every request with a body comes here at least once
        target = -(-received // STEP_BYTES) * STEP_BYTES
        if declared is not None and declared >= received and declared < target:
            target = declared
        reservation = self._reservation
        extra = max(0, min(target * COST_PER_BODY_BYTE, budget.share_bytes) - reservation.bytes)
        if extra:
            if budget.refusing or not budget.pool.try_take(self.holder, extra):
                return False
            HELD(float(budget.pool.held))
        self.covered = target
        if not extra:
            return True
        if reservation is NOTHING:
            self._reservation = Reservation(budget, extra, self.holder)
        else:
            reservation.bytes += extra
        return True

    async def cover(self, received: int, declared: int | None = None) -> None:
        """:meth:`try_cover`, waiting up to :data:`WAIT_SECONDS` for room; the 503 past it."""
        if self.try_cover(received, declared):
            return
        target = self._target(received, declared)
        extra = await self._budget._take(self.holder, self._cost(target))
        self._add(target, extra)

    async def reserve(self, body_bytes: int) -> None:
        """The whole body at once (its bytes are all here)."""
        await self.cover(body_bytes, body_bytes)

    def _cost(self, target: int) -> int:
        """The budget bytes to add for ``target`` body bytes: what they cost, less what is held (a request costs at
        most a share)."""
        return max(0, min(target * COST_PER_BODY_BYTE, self._budget.share_bytes) - self._reservation.bytes)

    def _add(self, target: int, extra: int) -> None:
        self.covered = target
        if not extra:
            return
        if self._reservation is NOTHING:
            self._reservation = Reservation(self._budget, extra, self.holder)
        else:
            self._reservation.bytes += extra

    def grow(self, size: int) -> None:
        """``size`` bytes more the request already holds (fairness/memory_charge.py): its reservation grows, whatever
        the budget or its holder's share; nothing once released, nor for a request that held nothing (no body: it
        loads no history)."""
        self._reservation.grow(size)

    @property
    def bytes(self) -> int:
        return self._reservation.bytes

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
        key = (authorization or "").strip()
        if not key:
            return tenant
        return "client:" + hashlib.blake2b(key.encode(errors="replace"), digest_size=16).hexdigest()

    def held_by(self, holder: str) -> int:
        return self.pool.holds(holder)

    async def reserve(self, body_bytes: int, *, holder: str = DEFAULT_TENANT, wait: float = WAIT_SECONDS
                      ) -> Reservation:
        """Room for a request of ``body_bytes`` whose bytes are all here; raises the 503 (:func:`overloaded`,
        :func:`share_exceeded`) when none came within ``wait`` seconds."""
        if not self.total or not body_bytes:
            return NOTHING
        size = min(body_bytes * COST_PER_BODY_BYTE, self.share_bytes)  # the largest runs alone rather than never
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
        if self.refusing:
            return None
        if self.pool.try_take(holder, size):
            HELD(float(self.pool.held))
            return size
        return None

    async def _take(self, holder: str, size: int, wait: float = WAIT_SECONDS) -> int:
        if not size:
            return 0
        if self.refusing:
            raise overloaded()
        taken = self._try_take(holder, size)
        if taken is not None:
            return taken
        try:
            await self.pool.take(holder, size, wait)
        except Refused as refused:
            if refused.reason == "share":
                raise share_exceeded(self.share) from None
            raise overloaded() from None
        HELD(float(self.pool.held))
        return size

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
