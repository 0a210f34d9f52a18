"""Which connections the pods' egress door (egress_door.py) keeps: every sandbox pod can reach the door, and a
connection costs the bridge a descriptor from its accept on, before it has shown any credential — so the door
bounds what it holds for connections that have not shown one yet (*pending*), per source address and in all, and
what it holds at all.

- A pending connection lives at most ``head_seconds`` (its request head, credential included, must arrive by then).
- One source holds at most ``per_source`` pending connections: past it, its new one is closed at once.
- All sources together hold at most ``pending``: past it, a new connection from a source that holds fewer pending
  connections than the busiest one takes the place of that source's oldest (closed), else it is closed at once. So
  sources flooding the door shed their own connections, and a pod that connects now and then always gets in.
- The door holds at most ``connections`` connections, pending or relaying (0: an eighth of the process's
  descriptor limit, at least 16, at most 1,024). A relayed connection costs four descriptors (the pod's, the door's
  to the call's proxy, the proxy's end of it and the proxy's to the server), so the door and the proxies behind it
  never take more than half of them: the HTTP door, ``/health`` and the store keep the rest.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass

FLOOR = 16
CEILING = 1024


@dataclass(frozen=True, slots=True)
class DoorLimits:
    """The door's bounds (RESPONSES_BRIDGE_AGENT_SANDBOX_EGRESS_*)."""

    head_seconds: float = 2.0
    per_source: int = 16
    pending: int = 64
    connections: int = 0

    @property
    def cap(self) -> int:
        """Connections the door holds at once, pending or relaying."""
        if self.connections > 0:
            return self.connections
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return CEILING
        return max(FLOOR, min(CEILING, soft // 8))


class Admission:
    """The door's count of its connections. :meth:`arrive` for each accepted connection (with how to close it),
    :meth:`shown` once it has shown a live call's credential, :meth:`leave` when it ends."""

    def __init__(self, limits: DoorLimits) -> None:
        self.limits = limits
        self.cap = limits.cap
        self.open = 0
        self.refused = 0  # since the door opened: closed at once, or evicted by a quieter source
        self._pending: dict[str, dict[int, Callable[[], None]]] = {}  # by source, oldest first
        self._pending_count = 0
        self._live: set[int] = set()
        self._next = 0

    @property
    def pending(self) -> int:
        return self._pending_count

    def arrive(self, source: str, close: Callable[[], None]) -> int | None:
        """A ticket for a connection just accepted from ``source``, or None: it is to be closed at once.
        ``close`` ends the connection should a quieter source's take its place."""
        mine = self._pending.get(source, {})
        if len(mine) >= self.limits.per_source:
            self.refused += 1
            return None
        if (self._pending_count >= self.limits.pending or self.open >= self.cap) and not self._evict(len(mine)):
            self.refused += 1
            return None
        self._next += 1
        self._pending.setdefault(source, {})[self._next] = close
        self._pending_count += 1
        self._live.add(self._next)
        self.open += 1
        return self._next

    def shown(self, source: str, ticket: int) -> None:
        """The connection showed a live call's credential: no longer pending (it still counts in :attr:`open`)."""
        self._drop(source, ticket)

    def leave(self, source: str, ticket: int) -> None:
        """The connection ended (pending or not; evicted already counts nothing twice)."""
        self._drop(source, ticket)
        if ticket in self._live:
            self._live.discard(ticket)
            self.open -= 1

    def _evict(self, held: int) -> bool:
        """Close the oldest pending connection of the source holding the most, if it holds more than ``held``."""
        if not self._pending:
            return False
        busiest = max(self._pending, key=lambda source: len(self._pending[source]))
        connections = self._pending[busiest]
        if len(connections) <= held:
            return False
        ticket = next(iter(connections))
        close = connections[ticket]
        self.leave(busiest, ticket)  # its handler's own leave() then counts nothing
        self.refused += 1
        close()
        return True

    def _drop(self, source: str, ticket: int) -> None:
        connections = self._pending.get(source)
        if connections is None or connections.pop(ticket, None) is None:
            return
        self._pending_count -= 1
        if not connections:
            del self._pending[source]
