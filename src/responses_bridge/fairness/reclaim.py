"""Ending held work to give its room back — the two cases the shared pools' rule (share.py) still allows, since
neither is a tenant's share of a queue: the memory backstop (services/tenancy/memory_watch.py: :func:`take_back`)
when real memory passes its watermark, and the egress proxy's connections, which are accepted before they are
admitted and cannot wait (:func:`make_room`). Every other pool waits for work to end by itself.

Scans of the holdings, on these rare paths only; the holdings are what the pool's owners enlisted
(``FairPool.enlist``: a memory reservation, an egress connection's task).
"""

from __future__ import annotations

from typing import Any

from .preemption import PREEMPTED, take_back_task, was_taken_back
from .share import FairPool, fair_holds


def make_room(pool: FairPool, tenant: str, size: int) -> bool:
    """Take back room for ``size`` of ``tenant``'s, if it holds less than its fair share ``C / n``, from the tenant
    holding most above its own (its largest holding, the newest of equals), while that tenant would still hold more
    than the asker; True if anything is being taken back for it. With more tenants than units (each holding one)
    nothing is: no holder would still hold more than the asker."""
    holds = pool.holds(tenant)
    tenants = pool._present(tenant)
    if fair_holds(pool.capacity, holds, tenants) or (holds and holds + size > pool.cap(tenant)):
        return False
    taking = pool._taking
    took = False
    while pool.capacity - pool.held + sum(taking.values()) < size:
        chosen, most = None, holds + size
        for name, other in pool.tenants.items():
            left = other.holds - sum(taking.get(held, 0) for held in other.holdings)
            if name != tenant and other.holdings and left * tenants > pool.capacity and left > most:
                chosen, most = name, left
        if chosen is None or not _take_largest(pool, chosen):
            return took
        took = True
    return took


def _take_largest(pool: FairPool, tenant: str) -> bool:
    """End the largest (the newest of equals) of ``tenant``'s holdings not already being taken back."""
    best, best_size = None, -1
    for holding in pool.tenants[tenant].holdings:
        task = pool._task(holding)
        size = pool._size(holding)
        if task is not None and holding not in pool._taking and not was_taken_back(task) and size >= best_size:
            best, best_size = holding, size
    return best is not None and take_back(pool, tenant, best, PREEMPTED)


def take_back(pool: FairPool, tenant: str, holding: Any, reason: str) -> bool:
    """End ``holding`` of ``tenant``'s (its room comes back when its work has stopped and it is given back)."""
    size = pool._size(holding)
    if holding in pool._taking or not take_back_task(pool._task(holding), pool.what):
        return False
    pool._taking[holding] = size
    pool.preempted += 1
    if pool.on_preempt is not None:
        pool.on_preempt(tenant, reason, size)
    return True



def still_taking(pool: FairPool, holding: Any) -> bool:
    """Whether ``holding``, taken back, has not yet given its room back (its work still stopping)."""
    return holding in pool._taking
