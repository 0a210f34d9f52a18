"""Attained service: how much of one pool each tenant has been served lately, kept so that comparing two tenants
costs nothing per waiter (share.py ranks its waiting tenants by it).

A tenant's **service** in a pool is the amount it held times how long it held it (unit-seconds, or byte-seconds in
the memory budget), decayed exponentially with the time constant :func:`time_constant` (``MEMORY_QUANTA`` quanta:
``RESPONSES_BRIDGE_FAIR_SHARE_QUANTUM`` is the unit of the pool's memory of use). Old use is forgotten as it
decays: a tenant idle for a few time constants is a fresh tenant, and nothing of a tenant's standing only ever
worsens (the rule before ranked a tenant by when it was last taken from, an absolute time kept while it was idle:
one take-back put a victim behind every other tenant for good).

Kept lazily, as a multiple of the decay: a tenant's record is ``S(t) * e^((t - origin) / tau)`` (the same number
while it holds nothing: decay and the growing factor cancel), brought up to date only at its own events (it takes
or gives room): what it held since its last one, integrated with the decay (two exponentials; none when it held
nothing, the usual admission). Two records compare as the tenants' service at the same instant, whenever
each was last brought up to date, so a pool's waiting tenants stay in a heap keyed by their records without any
per-waiter decay. The factor grows without bound: past :data:`RENORMALISE` time constants the pool moves its
origin to now and divides its records by the factor (:meth:`Service.renormalise`: once in hundreds of time
constants, a scan of the pool's tenants).
"""

from __future__ import annotations

import math
import time
import weakref

DEFAULT_QUANTUM = 2.0
"""Seconds, the default of ``fair_share_quantum``."""
MEMORY_QUANTA = 4.0
"""Attained service decays with a time constant of this many quanta (8 s by default): long enough to tell a tenant
that held units a few seconds ago from one that never did, short enough that old use is forgotten."""
RENORMALISE = 200.0
"""Time constants after which a pool's records are rescaled to a new origin (e^200 is far inside a float)."""
_process_quantum = [DEFAULT_QUANTUM]
_clocks: weakref.WeakSet[Service] = weakref.WeakSet()


def set_quantum(seconds: float) -> None:
    """The process's quantum (the composition root sets it from the settings; a pool made before follows it)."""
    _process_quantum[0] = max(0.0, seconds)
    for clock in list(_clocks):
        clock.tau = clock.time_constant()


def process_quantum() -> float:
    return _process_quantum[0]


class Service:
    """The clock of one pool's service records: ``factor(now)`` is ``e^((now - origin) / tau)``. ``quantum``: the
    pool's own (None: the process's). ``tau``: the time constant, kept as a plain attribute for the hot paths."""

    __slots__ = ("__weakref__", "_quantum", "origin", "tau")

    def __init__(self, quantum: float | None = None) -> None:
        self._quantum = quantum
        self.origin = time.monotonic()
        self.tau = self.time_constant()
        if quantum is None:
            _clocks.add(self)

    @property
    def quantum(self) -> float:
        return self._quantum if self._quantum is not None else _process_quantum[0]

    def time_constant(self) -> float:
        """Seconds: how fast service is forgotten (``MEMORY_QUANTA`` quanta; 1 s with a quantum of 0)."""
        return MEMORY_QUANTA * self.quantum or 1.0

    def factor(self, now: float) -> float:
        """The scale of a record made at ``now`` (raises nothing: the pool renormalises before it could overflow)."""
        return math.exp((now - self.origin) / self.tau)

    def stale(self, now: float) -> bool:
        """Has the factor grown past :data:`RENORMALISE` time constants (the pool must rescale its records)?"""
        return now - self.origin > RENORMALISE * self.tau

    def renormalise(self, now: float) -> float:
        """Move the origin to ``now``; returns what every record must be divided by."""
        scale = self.factor(now)
        self.origin = now
        return scale

    def attained(self, record: float, now: float) -> float:
        """A record's service at ``now``, in unit-seconds (byte-seconds), for what it held up to its last event."""
        return record / self.factor(now)
