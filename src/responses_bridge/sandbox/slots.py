"""How many sandboxes run at once, shared fairly among tenants.

A slot is given by the fair-share rule of every shared pool (fair_share.py): alone, a tenant holds at most its
share of the slots (``max_sandboxes``; by default all of them where there is one tenant, else all but one); beside
others, it is given another only while the slots left free are at least its ratio times what it then holds, and a
tenant holding none is given a free slot at once — so several tenants' runaway code together always leave a slot
for another's first call. A freed slot goes to the waiting tenant that holds the fewest, first come first served
among equals, so a tenant with a queue of calls cannot starve one with a single call. Program slots share the same
class (``acquire(tenant, timeout)`` / ``release``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..fair_share import FairShare


@dataclass(slots=True)
class _Waiter:
    tenant: str
    granted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class FairSlots:
    """``total`` slots; ``share(tenant)``: how many one tenant may hold at once (at least 1)."""

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

    async def acquire(self, tenant: str, timeout: float) -> bool:
        """Wait for a slot at most ``timeout`` seconds: True once it is ``tenant``'s, False if none came."""
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
