"""Room kept for every tenant, by admission alone (share.py's pools): the last part of a pool that only a tenant
holding little may take while other tenants are active, so that holders whose work runs long never take the last
of it.

Nothing in flight is taken back for fairness (its work would be thrown away), so whatever a rule lets the holders
take stays theirs until their work ends — a 40 s model call, a slow body, a program — and a tenant arriving after
they filled the pool waited for that, or was refused (the regression of share.py's "never take back" rule: a
victim 0 of 10 beside 4 greedy tenants' long calls). So the pool keeps **headroom**:

* ``reserve`` = ``HEADROOM`` of the capacity (half of a unit pool; an eighth of the memory budget:
  ``MEMORY_HEADROOM``). A take that would leave less than ``reserve`` free is *into the headroom*; any other
  (within the tenant's cap, nobody waiting) is served as before.
* Into the headroom a tenant may hold at most ``floor`` = ``reserve / FLOOR_PARTS`` (an eighth of it, one unit at
  least) — counting all it holds — unless the pool is not shared: then it is the whole pool up to its cap
  (work-conserving alone).
* The pool is **shared** for a tenant while another tenant holds or waits, or while one left it within the
  window: the pool's service time constant (tenure.py: 4 quanta, 8 s by default), so a tenant that just left still
  counts and a tenant alone after a quiet window has the whole pool again.

The bound: the holders together never take the headroom but by floors, one per tenant, so while fewer than
``FLOOR_PARTS`` (8) other tenants hold a floor inside it, a tenant holding nothing finds its floor free at once —
however long the holders' work runs, whatever they hold above the line. The ninth and later fresh tenants (keys)
in a row find what is left, then wait in the queue: no admission-only rule can hold against unboundedly many fresh
keys, each of which is indistinguishable from a victim. There the backstop is share.py's own: a unit or byte given
back goes to the waiting tenant served least lately (a tenant holding nothing first), the queue is bounded (the
tenant holding and waiting most loses its newest), and a wait past the pool's timeout is refused.

The price is the headroom itself: while tenants are active beside each other, up to the reserve may stay free for
a newcomer while the holders' own further work waits (it is refused as its share when its wait runs out). Pools
of fewer than :data:`SMALLEST` units keep none; the egress connections keep none either (a connection cannot wait:
they take one back for a tenant under its ``C / n`` instead: reclaim.py).

The hot path stays O(1): a take above the line costs one comparison more; the window is kept as the last tenant to
leave the pool and the last time another did (two numbers set where a tenant's last holding is given back), not a
list of tenants.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from .tenure import Service

HEADROOM = 0.5
"""The part of a unit pool kept for tenants holding little while the pool is shared (see above)."""
MEMORY_HEADROOM = 0.125
"""The memory budget's: its requests differ in size by orders of magnitude, one holder alone already leaves the
other half of it (``RESPONSES_BRIDGE_MEMORY_BUDGET_SHARE``), and a request in flight may grow in steps as it
loads (a body, a file's text), so what is kept idle costs requests that could have finished: an eighth kept holds
eight floors of 1/64 of the budget (4 MiB of 256: a body of ~140 KB), at least :data:`MEMORY_FLOOR` each. None
when one holder may hold the whole budget (a share of 1)."""
MEMORY_FLOOR = 64 * 1024
"""The memory budget's least floor: what a small request (a 2 KB body) is charged."""
FLOOR_PARTS = 8
"""How many tenants' floors the headroom holds: what one tenant may hold into it is ``reserve / FLOOR_PARTS``."""


SMALLEST = 4
"""Pools of fewer units keep no headroom: one unit kept would be a third or half of them, and there C / n is a
unit already — the least served waiting tenant gets the unit given back (share.py)."""


def sizes(capacity: int, headroom: float, least: int = 1) -> tuple[int, int]:
    """(``reserve``, ``floor``) of a pool of ``capacity`` keeping ``headroom`` of it (none below :data:`SMALLEST`),
    a floor at least ``least`` (and at most the reserve)."""
    reserve = int(capacity * headroom) if capacity >= SMALLEST else 0
    return reserve, (min(reserve, max(least, reserve // FLOOR_PARTS)) if reserve else 0)


class Window:
    """Who left the pool last, and when another tenant was last seen — what :meth:`shared` needs, in O(1)."""

    __slots__ = ("blocked", "last", "last_at", "other_at", "wake")

    def __init__(self) -> None:
        self.last: str | None = None  # the tenant that left the pool last
        self.last_at = float("-inf")  # when it did
        self.other_at = float("-inf")  # when a tenant other than ``last`` last left
        self.blocked: dict[str, Any] = {}  # waiting tenants set aside by the headroom (share.py's _Tenant states)
        self.wake: asyncio.TimerHandle | None = None

    def left(self, tenant: str, now: float) -> None:
        """``tenant`` holds and waits for nothing any more (share.py's retire)."""
        if tenant != self.last:
            self.other_at = self.last_at
            self.last = tenant
        self.last_at = now

    def seen_other(self, tenant: str) -> float:
        """When a tenant other than ``tenant`` last left the pool."""
        return self.other_at if tenant == self.last else self.last_at


class FairPool(Protocol):
    """What the headroom reads and calls of a pool (share.py's FairPool): a protocol, so that the rule's module and
    the pool's do not import each other."""

    tenants: dict[str, Any]
    window: Window
    service: Service
    floor: int
    waiting: int

    def _dispatch(self) -> None: ...

    def _key(self, tenant: str, state: Any) -> None: ...


def shared(pool: FairPool, tenant: str, now: float) -> bool:
    """Is the pool shared for ``tenant``: another tenant holds or waits, or left within the window?"""
    tenants = pool.tenants
    if len(tenants) > 1 or (tenants and tenant not in tenants):
        return True
    return now - pool.window.seen_other(tenant) < pool.service.tau


def may_dip(pool: FairPool, tenant: str, holds: int, size: int, now: float) -> bool:
    """May ``tenant``, holding ``holds``, take ``size`` into the headroom? Within its floor, or the pool not shared."""
    return holds + size <= pool.floor or not shared(pool, tenant, now)


def until_alone(pool: FairPool, tenant: str, now: float) -> float | None:
    """Seconds until the window lets ``tenant`` alone again (None: another tenant holds or waits now)."""
    tenants = pool.tenants
    if len(tenants) > 1 or (tenants and tenant not in tenants):
        return None
    return max(0.0, pool.window.seen_other(tenant) + pool.service.tau - now)


def set_aside(pool: FairPool, tenant: str, state: Any, now: float) -> None:
    """``tenant`` (its waiting state) waits for room above the headroom, or for the pool to be its alone: back among
    the waiting tenants when some is given back above it (share.py's give), or when the window that makes the pool
    shared for it runs out while nobody else holds or waits (a timer on the waiter's loop)."""
    window = pool.window
    window.blocked[tenant] = state
    alone_in = until_alone(pool, tenant, now)
    if alone_in is not None and window.wake is None:
        window.wake = asyncio.get_running_loop().call_later(alone_in + 1e-3, _woken, pool)


def _woken(pool: FairPool) -> None:
    pool.window.wake = None
    unblock(pool)
    if pool.waiting:
        pool._dispatch()


def unblock(pool: FairPool) -> None:
    """The tenants the headroom set aside, back among the waiting tenants (O(k log n), k set aside)."""
    blocked = pool.window.blocked
    pool.window.blocked = {}
    for tenant, kept in blocked.items():
        state = pool.tenants.get(tenant)
        if state is kept and state is not None and state.waiting and not state.keyed:
            pool._key(tenant, state)
