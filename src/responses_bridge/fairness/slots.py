"""The unit pools' face of the shared pools' rule (share.py): sandbox slots, program slots and upstream
connections, one unit at a time. A slot is never taken back (its work would be lost); a freed one goes to the least
served waiting tenant."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from ..observability.metrics import POOL_PREEMPTED
from .share import FairPool, Reason, Refused

__all__ = ["FairSlots"]

log = structlog.get_logger("responses_bridge.fair_share")


def _counted(what: str) -> Callable[[str, str, int], None]:
    def preempted(tenant: str, reason: str, size: int) -> None:
        POOL_PREEMPTED.labels(what).inc()
        log.warning("fair_share_taken_back", pool=what, reason=reason, size=size)
    return preempted


class FairSlots:
    """``total`` slots, one at a time, by the rule above; ``share(tenant)``: how many one tenant may hold alone (at
    least 1). The pool of sandbox slots, program slots and upstream connections: a slot is never taken back (its
    work would be lost); a freed one goes to the least served waiting tenant."""

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
        return self.pool.try_take(tenant, 1) is not None

    async def acquire(self, tenant: str, timeout: float | None) -> bool:
        """Wait for a slot at most ``timeout`` seconds (None: until one comes; the least served waiting tenant is
        given the next free one): True once it is ``tenant``'s, False if none came."""
        return await self.acquire_or_why(tenant, timeout) is None

    async def acquire_or_why(self, tenant: str, timeout: float | None) -> Reason | None:
        """:meth:`acquire`, saying why not (:class:`Refused`'s reasons) instead of False."""
        if self.pool.try_take(tenant, 1) is not None:
            return None
        try:
            await self.pool.take(tenant, 1, timeout)
        except Refused as refused:
            return refused.reason
        return None

    def release(self, tenant: str) -> None:
        self.pool.give(tenant, 1)
