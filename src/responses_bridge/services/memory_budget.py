"""One memory budget for the requests a process holds at once, so a burst of large ones is answered 503 rather than
the pod being killed for memory with every stream in flight — and shared, so that no caller can take it all.

What a request holds is judged from its body before it is parsed: :data:`COST_PER_BODY_BYTE` times its bytes (a
request's parsed items, translation and stored rows peak at about 30 times the JSON they came in, measured for
100,000 tiny items: the costliest shape; ordinary text costs less). A request reserves as its body's bytes arrive,
in steps of :data:`STEP_BYTES` (never more than its declared length), not the declared total up front: a connection
that declares 64 MiB and sends one byte holds one step, not 1.9 GiB (:class:`Held`). The HTTP door reserves for the
handler's life (adapters/http/params.py, limits.py), the ext_proc door for the gRPC stream's
(adapters/extproc/request_phase.py), and a WebSocket turn from the moment its frame is queued until the turn ends.

Each holder (the tenant; with ``RESPONSES_BRIDGE_AUTH=none``, the caller's key: :meth:`MemoryBudget.holder`) is admitted
by the fair-share rule every shared pool uses (fair_share.py): alone it may hold its share of the budget
(``RESPONSES_BRIDGE_MEMORY_BUDGET_SHARE``, half by default); beside others, it is given more only while it leaves free
at least half what it then holds, so however many callers hold their most, the next one finds room at once. Past that,
or past the budget, new work waits up to :data:`WAIT_SECONDS` for room (room freed goes first to the waiting holder that
holds least), then gets a 503 with ``Retry-After`` (the openai SDKs retry it): ``server_overloaded`` for the whole
budget, ``memory_share_exceeded`` naming the share for a holder at its own. A request larger than a share runs when its
holder holds nothing else, rather than never. How long a body may take to arrive is bounded (services/body_pace.py), so
an idle connection gives its steps back.

The budget defaults to half of what the process may use: the cgroup's memory limit (a container's, a pod's), else
the machine's memory, shared among the workers.
"""

from __future__ import annotations

import asyncio
import hashlib

from ..fair_share import FairShare
from ..observability.metrics import MEMORY_HELD, MEMORY_REFUSED
from ..protocol.errors import APIError
from ..store.base import DEFAULT_TENANT

OVERLOADED = "server_overloaded"
SHARE_EXCEEDED = "memory_share_exceeded"
RETRY_LATER = frozenset((OVERLOADED, SHARE_EXCEEDED))
"""The codes of the budget's 503s, answered with ``Retry-After``."""
COST_PER_BODY_BYTE = 30
WAIT_SECONDS = 2.0
DEFAULT_SHARE = 0.5
STEP_BYTES = 64 * 1024
"""Body bytes reserved at a time as a body arrives (about 2 MiB of the budget)."""


def overloaded() -> APIError:
    MEMORY_REFUSED.inc()
    return APIError(503, "The server is holding as much request memory as it may (RESPONSES_BRIDGE_MEMORY_BUDGET_"
                    "BYTES); retry shortly.", type="server_error", code=OVERLOADED)


def share_exceeded(share: float) -> APIError:
    MEMORY_REFUSED.inc()
    return APIError(503, f"This caller's requests in flight hold its fair share of the server's request memory "
                    f"(alone at most {share:.0%} of it: RESPONSES_BRIDGE_MEMORY_BUDGET_SHARE; beside other callers "
                    "no more than it leaves to them); other callers are still served. Retry when some of them have "
                    "ended.", type="server_error", code=SHARE_EXCEEDED)


class Reservation:
    """Bytes of the budget one request holds for one holder; :meth:`release` is idempotent, so every exit path may
    call it."""

    __slots__ = ("_budget", "bytes", "holder")

    def __init__(self, budget: MemoryBudget | None, size: int, holder: str = DEFAULT_TENANT) -> None:
        self._budget = budget
        self.bytes = size
        self.holder = holder

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget._give_back(self.holder, self.bytes)


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
        if received <= self.covered or not self._budget.total:
            return True
        target = self._target(received, declared)
        extra = self._budget._try_take(self.holder, self._cost(target))
        if extra is None:
            return False
        self._add(target, extra)
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

    @property
    def bytes(self) -> int:
        return self._reservation.bytes

    def release(self) -> None:
        self._reservation.release()


class _Waiter:
    __slots__ = ("future", "holder", "size")

    def __init__(self, holder: str, size: int) -> None:
        self.holder = holder
        self.size = size
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class MemoryBudget:
    """The process's reservations against ``total`` bytes (0: no budget), each holder's admitted by the fair-share
    rule (fair_share.py) with ``share`` of it as what one holder may hold alone.
    ``by_client_key``: there are no tenants (``auth: none``), so a caller's key tells callers apart
    (:meth:`holder`)."""

    def __init__(self, total: int, share: float = DEFAULT_SHARE, *, by_client_key: bool = False) -> None:
        self.total = total
        self.share = share
        self.share_bytes = max(1, int(total * share)) if total else 0
        self.held = 0
        self.by_holder: dict[str, int] = {}
        self._by_client_key = by_client_key
        self._waiters: list[_Waiter] = []
        self._rule = FairShare(total, self.share_bytes)

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
        return self.by_holder.get(holder, 0)

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

    def _fits(self, holder: str, size: int) -> bool:
        return self._rule.admits(self.held, self.by_holder.get(holder, 0), size)

    def _grant(self, holder: str, size: int) -> int:
        self.held += size
        self.by_holder[holder] = self.by_holder.get(holder, 0) + size
        MEMORY_HELD.set(self.held)
        return size

    def _try_take(self, holder: str, size: int) -> int | None:
        if not size:
            return 0
        return self._grant(holder, size) if self._fits(holder, size) else None

    async def _take(self, holder: str, size: int, wait: float = WAIT_SECONDS) -> int:
        taken = self._try_take(holder, size)
        if taken is not None:
            return taken
        waiter = _Waiter(holder, size)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(waiter.future)
        except TimeoutError:
            pass
        except BaseException:  # the request went away while it waited: nothing may stay held for it
            if waiter.future.done():
                self._give_back(holder, size)
            else:
                self._forget(waiter)
            raise
        if not waiter.future.done():  # no room came in time
            self._forget(waiter)
            if self._rule.by_share(self.held, self.by_holder.get(holder, 0), size):
                raise share_exceeded(self.share)
            raise overloaded()
        return size

    def _forget(self, waiter: _Waiter) -> None:
        waiter.future.cancel()
        self._waiters.remove(waiter)

    def _give_back(self, holder: str, size: int) -> None:
        self.held -= size
        left = self.by_holder.get(holder, 0) - size
        if left > 0:
            self.by_holder[holder] = left
        else:
            self.by_holder.pop(holder, None)
        MEMORY_HELD.set(self.held)
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        """Room came back: the waiters it fits, the holders that hold least first."""
        for waiter in sorted(self._waiters, key=lambda waiter: self.by_holder.get(waiter.holder, 0)):
            if self._fits(waiter.holder, waiter.size):
                self._grant(waiter.holder, waiter.size)
                self._waiters.remove(waiter)
                waiter.future.set_result(None)
