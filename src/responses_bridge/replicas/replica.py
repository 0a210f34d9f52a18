"""One replica of an upstream: where it is, what it is doing (the bridge's own calls in flight, what it picked
lately, what its ``/metrics`` say), whether it is in or taken out, and what the bridge observed of its cache.

:class:`Picked` is one call's hold on a replica: made by the picker with the replica's in-flight count raised,
ended once (:meth:`Picked.done`) with how the call went — which lowers the count, takes a replica that refused the
connection or failed out, and counts the prompt tokens the backend said it had cached.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from ..observability.timing import note_replica
from .prefix import PrefixIndex
from .series import Series

RECENT_HALF_LIFE = 30.0
"""Seconds over which a replica's count of recent picks halves: the window its share of the work is judged on."""
DOWN_FIRST = 1.0
"""Seconds a failed replica stays out before its first probe; doubled per failed probe up to :data:`DOWN_MOST`."""
DOWN_MOST = 30.0


def endpoint_of(url: str) -> str:
    """``host:port`` of a base URL (the port its scheme implies when none is written): the replica's key (metrics, the
    console, the chain map); through Envoy it is named by the address its host resolves to (``address.py``), which
    is what the ``override_host`` load balancer matches."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(eq=False)
class Replica:
    """One server of an upstream's models. ``key`` (its ``host:port``) names it in metrics, the console and the
    chain map."""

    url: str
    key: str = ""
    in_flight: int = 0
    picked: int = 0
    failures: int = 0
    down: bool = False
    retry_at: float = 0.0  # taken out: when it may be probed
    down_for: float = DOWN_FIRST
    last_failure: str = ""
    prompt_tokens: int = 0  # of answers with usage: what the bridge sent it ...
    cached_tokens: int = 0  # ... and what it said it had cached
    scraped_running: float | None = None  # its /metrics, when it has them (vLLM's names), None otherwise
    scraped_waiting: float | None = None
    kv_usage: float | None = None  # 0..1
    prefix: PrefixIndex = field(default_factory=PrefixIndex)
    series: Series | None = None  # its /metrics children, once it belongs to a set (series.py)
    _recent: float = 0.0
    _recent_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.key:
            self.key = endpoint_of(self.url)

    def join(self, upstream: str) -> None:
        """It belongs to ``upstream``'s set from now on: its series are made."""
        if self.series is None:
            self.series = Series(upstream, self.key)

    def leave(self) -> None:
        if self.series is not None:
            self.series.remove()
            self.series = None

    def recent(self, now: float) -> float:
        """Picks lately, each weighing half as much every :data:`RECENT_HALF_LIFE` seconds."""
        if now > self._recent_at:
            self._recent *= math.exp2(-(now - self._recent_at) / RECENT_HALF_LIFE)
            self._recent_at = now
        return self._recent

    def count_pick(self, now: float) -> None:
        self._recent = self.recent(now) + 1.0
        self.picked += 1
        self.in_flight += 1
        if self.series is not None:
            self.series.picked.inc()
            self.series.in_flight.inc()

    def count_end(self, prompt_tokens: int, cached_tokens: int) -> None:
        """A call ended: out of the in-flight count; an answer's usage counted."""
        self.in_flight = max(0, self.in_flight - 1)
        series = self.series
        if series is not None:
            series.in_flight.dec()
        if prompt_tokens > 0:
            cached = min(max(cached_tokens, 0), prompt_tokens)
            self.prompt_tokens += prompt_tokens
            self.cached_tokens += cached
            if series is not None:
                series.prompt.inc(prompt_tokens)
                series.cached.inc(cached)

    def load(self) -> float:
        """Requests it is working on: the bridge's own in flight, or its own report when that says more (other
        processes' and other clients' requests)."""
        scraped = (self.scraped_running or 0.0) + (self.scraped_waiting or 0.0)
        return max(float(self.in_flight), scraped)

    def cache_hit_rate(self) -> float | None:
        """Of the prompt tokens sent in answers that said, the share the backend had cached; None before any."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None

    def take_out(self, now: float, why: str) -> None:
        """Failed: out of the picking until :attr:`retry_at`, each failure in a row doubling the wait."""
        self.failures += 1
        self.last_failure = why
        if self.down:
            self.down_for = min(self.down_for * 2, DOWN_MOST)
        else:
            self.down_for = DOWN_FIRST
        self.down = True
        self.retry_at = now + self.down_for
        self.prefix.clear()
        if self.series is not None:
            self.series.up.set(0)

    def failed(self, kind: str) -> None:
        if self.series is not None:
            self.series.failed(kind)

    def bring_back(self) -> None:
        self.down = False
        self.down_for = DOWN_FIRST
        if self.series is not None:
            self.series.up.set(1)


OK = "ok"
CONNECT_FAILED = "connect_failed"
FAILED = "failed"


class Ends(Protocol):
    """What a :class:`Picked` reports to: its replica set (picker.py's ``ReplicaSet``), named by what it does so
    this module needs nothing of the picker's."""

    name: str

    def ended(self, picked: Picked, outcome: str, why: str, prompt_tokens: int, cached_tokens: int) -> None: ...

    def bind(self, chain: Iterable[str], replica: Replica) -> None: ...


class Picked:
    """One call's replica. :attr:`url`: its base URL (ending in /v1); :attr:`endpoint`: its ``host:port``;
    :attr:`name`: the upstream's name. End it once with :meth:`done`."""

    __slots__ = ("_chain", "_ended", "_set", "endpoint", "listed", "name", "replica", "url")

    def __init__(self, replica_set: Ends, replica: Replica, chain: tuple[str, ...]) -> None:
        self._set = replica_set
        self.replica = replica
        self.name = replica_set.name
        self.url = replica.url
        self.endpoint = replica.key
        self._chain = chain
        self._ended = False
        self.listed = ""  # through Envoy: the endpoint header's value, this replica then the others (address.py)
        note_replica(replica.key)  # the request's stored timing names it (the last one picked: where it was served)

    def done(self, outcome: str = OK, *, why: str = "", prompt_tokens: int = 0, cached_tokens: int = 0) -> None:
        """The call ended: ``ok`` (an answer came, a 500 included), ``connect_failed`` (refused before any byte
        was sent) or ``failed`` (a 502/503/504, a cut, a timeout): a failure takes the replica out. Usage, when the
        answer had it, counts toward the replica's observed cache hit rate. Later calls do nothing."""
        if self._ended:
            return
        self._ended = True
        self._set.ended(self, outcome, why, prompt_tokens, cached_tokens)

    def bind(self, *keys: str) -> None:
        """The chain's keys (and ``keys``: the response id this call produced) name this replica from now on."""
        self._set.bind((*self._chain, *keys), self.replica)

    @property
    def chain(self) -> tuple[str, ...]:
        return self._chain


Clock = Callable[[], float]
