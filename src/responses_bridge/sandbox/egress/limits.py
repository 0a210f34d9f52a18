"""The egress proxy's bounds (:class:`EgressLimits`), and the bridge-wide cap on its connections shared fairly
among tenants (:class:`ConnectionShares`).

Every call's proxy of one process counts its connections here as it accepts them (proxy.py): the call's
own limit (``code_egress_max_connections``), then its tenant's fair share, then the process's cap. Without the share the
cap was one pool: one tenant's few calls holding their 64 connections each took all of it, and every other tenant's
call was refused; with a fixed half each, two tenants did the same. A tenant is admitted by the fair-share rule of
every shared pool (fairness/share.py): alone its calls hold at most its share (``code_egress_tenant_connections``; by
default half the cap where tenants are told apart, all of it where there is one); with the cap reached, a tenant
holding less than its fair share (the cap over the tenants holding connections) is still served and the newest
connection of the tenant holding the most above its own is closed — so however many tenants flood, another's call
finds connections. The refusal names the share, and a connection ended gives its place back at once. With more
tenants than the cap's connections, each holding one (every holder above its share ``cap / n < 1``), nothing more
is closed: a connection of a tenant holding none waits briefly (:data:`TURN_QUANTA`) in the pool's queue, and the
next connection to end gives its place to the least served waiting tenant (fairness/share.py) — the cap is never
passed for this.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...fairness.preemption import current_task
from ...fairness.reclaim import make_room
from ...fairness.share import FairPool, Refused
from ...observability import metrics

BRIDGE_FLOOR = 16
"""The cap never goes below this, whatever the descriptor limit."""
TURN_QUANTA = 2.0
"""How long, in quanta, a connection of a tenant holding none waits for a place when more tenants than the cap's
connections hold one each (the next to end goes to the least served waiting tenant); past this wait it is refused
as before (the code's connect has been accepted: it waits, it is not refused)."""


@dataclass(frozen=True, slots=True)
class EgressLimits:
    """``call_bytes``: bytes both ways over all of a call's connections; ``connection_bytes``: of one connection;
    ``connections``: connections one call may open; ``connection_seconds``: one connection's life (the call's own
    timeout ends them all sooner)."""

    call_bytes: int = 64 << 20
    connection_bytes: int = 32 << 20
    connections: int = 64
    connection_seconds: float = 30.0
    bridge_connections: int = 0
    """Connections of every call's proxy together, open at once (0: a quarter of the process's descriptor limit,
    at most 1,024): one call's flood, or many calls at once, never take the descriptors ``/health``, the doors and
    other tenants' calls need."""
    tenant_connections: int = 0
    """Of those, what one tenant's calls may hold together (0: half where tenants are told apart, all of them with
    ``single_tenant``): another tenant's call always finds the rest (:class:`ConnectionShares`)."""
    single_tenant: bool = False

    @property
    def bridge_cap(self) -> int:
        if self.bridge_connections > 0:
            return self.bridge_connections
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(BRIDGE_FLOOR, min(1024, soft // 4)) if soft != resource.RLIM_INFINITY else 1024

    def tenant_share(self, cap: int) -> int:
        """What one tenant may hold of the bridge's ``cap``."""
        if self.tenant_connections > 0:
            return min(self.tenant_connections, cap)
        return cap if self.single_tenant else max(1, cap // 2)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a connection is not served: the outcome (the metric's label and ``X-Egress-Outcome``) and the message the
    code gets."""

    outcome: str
    message: str
    turn: bool = False
    """The tenant holds none beside more tenants than connections: its turn may come (:meth:`ConnectionShares.
    wait_turn`)."""


class ConnectionShares:
    """Connections served now, by tenant: one per process (:data:`SHARES`), shared by every call's proxy by the
    fair-share rule (fairness/share.py). A connection is held by its handler's task: taking it back for a tenant
    holding less than its share closes it."""

    def __init__(self) -> None:
        self._share = 0
        # no headroom (fairness/headroom.py): a connection cannot wait, and a tenant under its C / n takes one back
        self._pool = FairPool(0, lambda tenant: self._share, what="egress connections", queue=1, units=True,
                              headroom=0.0)
        self._pool.on_preempt = lambda tenant, reason, size: metrics.POOL_PREEMPTED.labels("egress").inc()

    @property
    def total(self) -> int:
        return self._pool.held

    def held(self, tenant: str) -> int:
        return self._pool.holds(tenant)

    def admit(self, tenant: str, *, share: int, cap: int) -> Refusal | None:
        """Count one more of ``tenant``'s connections, or say why not: past its share alone (``share``), or the
        process's ``cap`` reached while it holds at least its fair share. A tenant holding less than its fair share
        of a full cap is admitted at once, and the newest connection of the tenant holding the most above its own
        is closed to make up for it."""
        pool = self._pool
        pool.capacity, self._share = cap, max(1, min(share, cap))
        if pool.try_take(tenant, 1):
            self._admitted(tenant)
            return None
        holds = pool.holds(tenant)
        if holds >= self._share:
            return Refusal("tenant_connection_limit", f"this tenant's calls hold {holds} egress connections, its "
                           f"share of the bridge's {cap} (alone {self._share}: "
                           "RESPONSES_BRIDGE_CODE_EGRESS_TENANT_CONNECTIONS); try again when one ends")
        if make_room(pool, tenant, 1):
            pool.force(tenant, 1)
            self._admitted(tenant)
            return None
        if holds:
            return Refusal("tenant_connection_limit", f"this tenant's calls hold {holds} egress connections, its "
                           f"fair share of the bridge's {cap} while other tenants hold the rest; try again when "
                           "one ends")
        return self._full(cap, turn=len(pool.tenants) + (tenant not in pool.tenants) > cap)

    @staticmethod
    def _full(cap: int, *, turn: bool = False) -> Refusal:
        return Refusal("bridge_connection_limit", f"the bridge holds all its {cap} egress connections "
                       "(RESPONSES_BRIDGE_CODE_EGRESS_BRIDGE_CONNECTIONS); try again later", turn)

    async def wait_turn(self, tenant: str, cap: int) -> Refusal | None:
        """After :meth:`admit`'s refusal with ``turn``: wait at most :data:`TURN_QUANTA` quanta in the pool's queue
        for a connection to end (its place goes to the least served waiting tenant: fairness/share.py); None once it is
        ``tenant``'s, else the refusal as before. The cap holds."""
        pool = self._pool
        try:
            await pool.take(tenant, 1, TURN_QUANTA * pool.service.quantum)
        except Refused:
            return self._full(cap)
        self._admitted(tenant)
        return None

    def _admitted(self, tenant: str) -> None:
        self._pool.enlist(tenant, current_task())
        metrics.EGRESS_OPEN.inc()

    def release(self, tenant: str) -> None:
        self._pool.discharge_current(tenant)
        self._pool.give(tenant, 1)
        metrics.EGRESS_OPEN.dec()


SHARES = ConnectionShares()
