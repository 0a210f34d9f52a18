"""The egress proxy's bounds (:class:`EgressLimits`), and the bridge-wide cap on its connections shared fairly
among tenants (:class:`ConnectionShares`).

Every call's proxy of one process counts its connections here as it accepts them (egress.py): the call's own limit
(``code_egress_max_connections``), then its tenant's fair share, then the process's cap. Without the share the cap
was one pool: one tenant's few calls holding their 64 connections each took all of it, and every other tenant's
call was refused; with a fixed half each, two tenants did the same. A tenant is admitted by the fair-share rule of
every shared pool (fair_share.py): alone its calls hold at most its share (``code_egress_tenant_connections``; by
default half the cap where tenants are told apart, all of it where there is one); beside others, one more only
while it leaves free at least its ratio times what it then holds (with the default half: as many as it holds), and
a tenant holding none is given a free connection at once — so however many tenants flood, another's call finds
connections. The refusal names the share, and a connection ended gives its place back at once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..fair_share import FairShare
from ..observability import metrics

BRIDGE_FLOOR = 16
"""The cap never goes below this, whatever the descriptor limit."""


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


class ConnectionShares:
    """Connections served now, by tenant: one per process (:data:`SHARES`), shared by every call's proxy."""

    def __init__(self) -> None:
        self.total = 0
        self._by_tenant: Counter[str] = Counter()
        self._rule = FairShare(0, 0, floor=1)

    def held(self, tenant: str) -> int:
        return self._by_tenant[tenant]

    def admit(self, tenant: str, *, share: int, cap: int) -> Refusal | None:
        """Count one more of ``tenant``'s connections, or say why not: past its fair share (alone: ``share``), or
        the process's ``cap`` reached (by its own connections and the others')."""
        rule = self._rule
        if rule.capacity != cap or rule.cap != share:
            rule = self._rule = FairShare(cap, share, floor=1)
        holds = self._by_tenant[tenant]
        if rule.by_share(self.total, holds, 1):
            return Refusal("tenant_connection_limit", f"this tenant's calls hold {holds} egress connections, its "
                           f"share of the bridge's {cap} while others hold some (alone {share}: "
                           "RESPONSES_BRIDGE_CODE_EGRESS_TENANT_CONNECTIONS); try again when one ends")
        if self.total >= cap:
            return Refusal("bridge_connection_limit", f"the bridge holds all its {cap} egress connections "
                           "(RESPONSES_BRIDGE_CODE_EGRESS_BRIDGE_CONNECTIONS); try again later")
        self.total += 1
        self._by_tenant[tenant] += 1
        metrics.EGRESS_OPEN.inc()
        return None

    def release(self, tenant: str) -> None:
        self.total -= 1
        self._by_tenant[tenant] -= 1
        if self._by_tenant[tenant] <= 0:
            del self._by_tenant[tenant]
        metrics.EGRESS_OPEN.dec()


SHARES = ConnectionShares()
