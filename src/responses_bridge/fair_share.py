"""The one admission rule of every pool the tenants share (the memory budget, egress connections, sandbox and program
slots, upstream connections): a fair share of what is contended, so that k tenants together never starve the
(k+1)th.

A fixed fraction per tenant ("at most half each") protects against one tenant only: two at their half took the whole
pool and a third got nothing. Room a tenant holds cannot be taken back (a request's memory, an open connection, a
running sandbox), so the rule must leave room *before* the next tenant comes. It is:

    a tenant is given ``size`` more only while it then holds at most ``cap`` (what one tenant may hold alone: the
    pool's share setting) and the room left free is at least ``ratio`` times what it then holds, where
    ``ratio = min(1/2, (capacity - cap) / cap)``; a tenant holding less than ``floor`` (one unit, in a pool counted
    in units: connections, slots) is given room whenever any is free.

Consequences:

* alone, a tenant holds at most ``cap`` (the share setting, as before); with a share of 1 (one tenant) the ratio is
  0 and it may hold everything;
* whatever k tenants hold, the room left free is never 0 while the last one given room holds anything (it left at
  least ``ratio`` times that), so a newcomer is always admitted at once for a part of it (two thirds of what
  is free, with the ratio of 1/2): with 1, 2, 3 greedy tenants already in and the default share of a half, at least
  1/2, 1/6, 1/18 of the pool is free;
* as work ends, the freed room goes to the waiting tenant that holds least (each pool's waiter queue), so n
  tenants that all want more converge to equal shares ``capacity / (n + ratio)`` — max-min fairness over the pool,
  with a part of a share kept free for whoever comes next.

The check is O(1), with no allocation: it needs only what the pool holds in all and what the tenant holds.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


class FairShare:
    """The rule for one pool of ``capacity`` units whose tenants may each hold at most ``cap`` alone (a tenant's own
    ceiling, where a policy gives it one, in its place: the ratio is then that tenant's)."""

    __slots__ = ("capacity", "cap", "floor")

    def __init__(self, capacity: int, cap: int, floor: int = 0) -> None:
        self.capacity = capacity
        self.cap = max(1, min(cap, capacity)) if capacity else 0
        self.floor = floor

    def admits(self, held: int, holds: int, size: int, cap: int | None = None) -> bool:
        """May a tenant holding ``holds`` (of the ``held`` the pool holds in all) be given ``size`` more?"""
        free = self.capacity - held
        if size > free:
            return False
        cap = self.cap if cap is None else max(1, min(cap, self.capacity))
        after = holds + size
        if after > cap:
            return False
        if after <= self.floor:
            return True
        rest = self.capacity - cap  # ratio: min(1/2, rest / cap), compared in integers
        return after <= 2 * (free - size) if 2 * rest >= cap else after * rest <= (free - size) * cap

    def by_share(self, held: int, holds: int, size: int, cap: int | None = None) -> bool:
        """Is ``size`` refused by the tenant's own holding, with room enough in the pool? (A refusal's code: the
        tenant's share, not the pool, is full.)"""
        return size <= self.capacity - held and not self.admits(held, holds, size, cap)


@dataclass(slots=True)
class _Waiter:
    tenant: str
    granted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class FairSlots:
    """``total`` slots given one at a time by :class:`FairShare` (a tenant holding none gets a free one at once),
    waiters served the tenant holding fewest first; ``share(tenant)``: how many one tenant may hold alone (at least
    1). The pool of sandbox slots, program slots and upstream connections."""

    def __init__(self, total: int, share: Callable[[str], int]) -> None:
        self.total = total
        self._share = share
        self._held: Counter[str] = Counter()
        self._waiting: list[_Waiter] = []
        self._busy = 0
        self._rule = FairShare(total, total, floor=1)  # each tenant's ceiling is its own share (admits' cap)

    @property
    def busy(self) -> int:
        return self._busy

    def held(self, tenant: str) -> int:
        return self._held[tenant]

    def try_acquire(self, tenant: str) -> bool:
        """A slot for ``tenant`` at once, if nobody waits and the rule admits it (nothing allocated), else False."""
        if not self._waiting and self._rule.admits(self._busy, self._held[tenant], 1, self._share(tenant)):
            self._held[tenant] += 1
            self._busy += 1
            return True
        return False

    async def acquire(self, tenant: str, timeout: float) -> bool:
        """Wait for a slot at most ``timeout`` seconds: True once it is ``tenant``'s, False if none came."""
        if self.try_acquire(tenant):
            return True
        waiter = _Waiter(tenant)
        self._waiting.append(waiter)
        self._dispatch()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.granted), timeout)
            return True
        except TimeoutError:
            return self._withdraw(waiter)
        except BaseException:
            if self._withdraw(waiter):
                self.release(tenant)
            raise

    def release(self, tenant: str) -> None:
        self._held[tenant] -= 1
        self._busy -= 1
        if self._held[tenant] <= 0:
            del self._held[tenant]
        self._dispatch()

    def _withdraw(self, waiter: _Waiter) -> bool:
        """Stop waiting: True if the slot was granted in the meantime (it is then held)."""
        if waiter.granted.done():
            return True
        waiter.granted.cancel()
        self._waiting.remove(waiter)
        return False

    def _dispatch(self) -> None:
        while self._busy < self.total and self._waiting:
            eligible = [waiter for waiter in self._waiting
                        if self._rule.admits(self._busy, self._held[waiter.tenant], 1, self._share(waiter.tenant))]
            if not eligible:
                return
            chosen = min(eligible, key=lambda waiter: self._held[waiter.tenant])  # min keeps the first of equals
            self._waiting.remove(chosen)
            self._held[chosen.tenant] += 1
            self._busy += 1
            chosen.granted.set_result(None)
