"""How long each holding of a shared pool has been held, for the one case of fair_share.py's rule where a holding
could pass back and forth: more tenants than units.

With ``n > C`` every tenant holding one unit is above its fair share ``C / n < 1``, so a tenant holding none is
under its own and takes a unit back; the tenant it took from then holds none, is under its share too, and would
take one straight back. A unit therefore has a **quantum** of tenure (``RESPONSES_BRIDGE_FAIR_SHARE_QUANTUM``)
before it may be taken back for a tenant holding none, and a tenant a unit was taken back from takes none back by
that rule within a quantum of losing it (it waits for a unit that comes free): units are time-shared, a quantum at
a time, rather than thrown back and forth. Work shorter than a quantum is never taken back this way.

The turns are paced, one every ``quantum / C`` at most: the units' tenures are then spread over the quantum
rather than ending together (taken back at once, every unit would come of age at once, and a tenant arriving
just after would wait a whole quantum); a newcomer waits about ``quantum / C`` for its turn.

The stamps cost nothing while a pool is not contended: a holding taken on the fast path (room free, nobody
waiting) is not stamped; it is stamped the first time the full pool looks at it, which can only make its tenure
look shorter than it is (never taken back early). Holdings given on the slow path (after a wait) are stamped as
they are given.

**A light tenant's turn** (least attained service). The quantum keeps greedy tenants from throwing units back and
forth, but it also kept a light tenant waiting: beside 16 greedy tenants arriving together on 8 sandbox slots every
unit had just been handed out when the victim came, and its first call waited for one to come of age (2.9 s, its
calls alone ~0.1 s). So each tenant's recent use of the pool is kept (``served``: the unit-seconds of its holdings
that have ended, decayed with a time constant of :data:`MEMORY_QUANTA` quanta; counted only while the pool is
contended, from the stamps). When no unit is past its quantum, a tenant holding none whose attained service is at
most half that of the holder served most (its past plus the unit it holds) takes that holder's unit back — once the
unit has been held ``quantum / C``, and within the same pacing — only from a tenant that **wants more** (it waits
for more while it holds, or the full queue refused it within a quantum). The quantum's own rule, too, takes a unit
of a tenant that wants more before one of a tenant holding its one call and asking nothing more (whose work ends by
itself: beside the greedy tenants' endless programs on a loaded machine a victim's program outlived a quantum and
was taken back, and its retry waited a whole round, ~9 s); that one goes only when no other unit is past its
quantum, and only to an asker served no more than it has been (its attained service plus this unit's tenure):
beside 16 greedy tenants on 8 sandbox slots every greedy unit was young now and then (the paced turns hand them on
as they come of age), and a victim's one call, slowed past its quantum on a loaded machine, went to a greedy tenant
served far more, three calls in a row.

Who asks first, among tenants holding as little: one never taken from, then the one taken from longest ago (a
greedy tenant's work is taken back, a light tenant's short calls end by themselves); among equals — a victim and
greedy tenants that have not yet had a turn — one not refused by the pool's full queue within a quantum (a tenant
whose excess was refused wants more than it holds and waits: without it, a greedy tenant left one waiter by the
queue looks as light as the victim), then the least served by whole quanta of unit-seconds, then the one claiming
least (held + waiting: max-min fairness serves the smallest demand first). Beside 16 greedy tenants on the 4
program slots the victim's first call was 12th in line, behind every greedy tenant not yet taken from.

The anti-thrash guarantees hold: the pool takes at most one unit back per ``quantum / C``; no unit younger than
``quantum / C`` is taken back; a tenant taken from takes none back within a quantum; and a young unit goes only to
a tenant served at most half as much as the one it is taken from — which, once served, is no longer that light, so
greedy tenants served alike take from each other only units past their quantum. Work shorter than ``quantum / C``
is never taken back this way.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any

DEFAULT_QUANTUM = 2.0
"""Seconds, the default of ``fair_share_quantum``."""
MEMORY_QUANTA = 4.0
"""A tenant's attained service decays with a time constant of this many quanta (8 s by default): long enough to
tell a tenant that held units a few quanta ago from one that never did, short enough that old use is forgotten."""
SERVED_KEPT = 1024
"""Past this many tenants' service records, those decayed to almost nothing are dropped (a scan per 256 new)."""
_process_quantum = [DEFAULT_QUANTUM]


def set_quantum(seconds: float) -> None:
    """The process's quantum (the composition root sets it from the settings; a pool made before reads it too)."""
    _process_quantum[0] = max(0.0, seconds)


def process_quantum() -> float:
    return _process_quantum[0]


def wants_more(state: Any, now: float, quantum: float) -> bool:
    """A greedy tenant's marks: it waits for more while it holds, or the pool's full queue refused it within a
    quantum. A tenant holding its one call and asking nothing more is spared while a greedy tenant's unit may go."""
    return bool(state.waiting > 0 or now - state.refused_at < quantum)


class Tenure:
    """When each holding of one pool began (``since``, as far as the pool knows), and a wake-up of the pool when a
    holding's quantum will have passed while a tenant waits for it. ``quantum`` None: the process's."""

    __slots__ = ("_quantum", "_timer", "_when", "next_turn", "served", "since")

    def __init__(self, quantum: float | None = None) -> None:
        self._quantum = quantum
        self.since: dict[Any, float] = {}
        self.served: dict[str, tuple[float, float]] = {}  # tenant: (unit-seconds, when), decayed from then
        self.next_turn = 0.0  # monotonic: no turn before it (the pool's last turn plus quantum / C)
        self._timer: asyncio.TimerHandle | None = None
        self._when = 0.0

    @property
    def quantum(self) -> float:
        return self._quantum if self._quantum is not None else _process_quantum[0]

    def stamp(self, holding: Any) -> None:
        """``holding`` begins now (given after a wait: the slow path)."""
        if holding is not None:
            self.since[holding] = time.monotonic()

    def ended(self, tenant: str, holding: Any) -> None:
        """``holding`` of ``tenant``'s is no longer held: its stamped time is added to the tenant's service."""
        began = self.since.pop(holding, None)
        if began is None:
            return
        now = time.monotonic()
        new = tenant not in self.served
        self.served[tenant] = (self.attained(tenant, now) + now - began, now)
        if new and len(self.served) > SERVED_KEPT and not len(self.served) % 256:  # a scan per 256 new tenants
            for name in [name for name in self.served if self.attained(name, now) < 1e-3]:
                del self.served[name]

    def attained(self, tenant: str, now: float) -> float:
        """``tenant``'s unit-seconds held in this pool recently (decayed), not counting what it holds now."""
        record = self.served.get(tenant)
        if record is None:
            return 0.0
        return record[0] * math.exp((record[1] - now) / (MEMORY_QUANTA * self.quantum or 1.0))

    def ranking(self, tenants: Mapping[str, Any]) -> Callable[[Any], tuple[float, bool, int, int]]:
        """A waiter's place among waiters holding as little (a unit pool's; ``tenants``: the pool's states by name):
        never taken from first, then the one taken from longest ago; among equals, one not refused by the full queue
        within a quantum, then the least served (by whole quanta of unit-seconds), then the least claiming (held +
        waiting). Module text."""
        now, quantum, served = time.monotonic(), self.quantum, bool(self.served)

        def rank(waiter: Any) -> tuple[float, bool, int, int]:
            state = tenants[waiter.tenant]
            return (state.taken_at, now - state.refused_at < quantum,
                    int(self.attained(waiter.tenant, now) / (quantum or 1.0)) if served else 0,
                    state.holds + state.waiting)
        return rank

    def turn(self, asker: str, candidates: Iterable[tuple[str, Any]], now: float, capacity: int,
             wake: Callable[[], None], tenants: Mapping[str, Any]) -> tuple[str, Any] | None:
        """The holding to take back for ``asker`` (holding none) among ``candidates`` (tenant, holding; ``tenants``:
        the pool's states by name): the one held longest past its quantum — a greedy tenant's before one that wants
        no more, which goes only to an asker served no more than it —, else a light tenant's turn from a greedy
        tenant (module text); None if neither, and then ``wake`` is called when one may be."""
        listed = list(candidates)
        greedy = {name for name, _ in listed if wants_more(tenants[name], now, self.quantum)}
        mine = self.attained(asker, now)  # a tenant asking no more, served less than the asker, keeps its unit
        found = self.longest_held([(tenant, holding) for tenant, holding in listed if tenant in greedy
                                   or self.attained(tenant, now) + now - self.since.get(holding, now) >= mine],
                                  now, wake, greedy)
        if found is not None:
            return found
        least = self.quantum / max(1, capacity)  # no unit younger than a turn's spacing is taken back
        most, soonest = 2 * self.attained(asker, now), float("inf")
        for tenant, holding in listed:
            if tenant not in greedy:  # a tenant asking no more is spared
                continue
            began = self.since[holding]
            if began + least > now:
                soonest = min(soonest, began + least)
                continue
            theirs = self.attained(tenant, now) + now - began
            if theirs > most:
                found, most = (tenant, holding), theirs
        if found is None and soonest < float("inf"):
            self.wake(soonest, wake)
        return found

    def longest_held(self, candidates: Iterable[tuple[str, Any]], now: float, wake: Callable[[], None],
                     first: Container[str] = ()) -> tuple[str, Any] | None:
        """Of ``candidates`` (tenant, holding), the one held longest among those held at least a quantum, those of
        the tenants in ``first`` before the others; None if every one is younger, and then ``wake`` is called when
        the first will have been."""
        quantum = self.quantum
        found: tuple[str, Any] | None = None
        best = (True, float("inf"))
        soonest = float("inf")
        for candidate in candidates:
            began = self.since.setdefault(candidate[1], now)  # first looked at now: its tenure starts now
            if began + quantum > now:
                soonest = min(soonest, began + quantum)
            elif (candidate[0] not in first, began) < best:
                found, best = candidate, (candidate[0] not in first, began)
        if found is None and soonest < float("inf"):
            self.wake(soonest, wake)
        return found

    def wake(self, at: float, call: Callable[[], None]) -> None:
        """``call`` at monotonic time ``at`` (or sooner, if a wake-up is already set for sooner)."""
        if self._timer is not None and self._when <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._when = at

        def fire() -> None:
            self._timer = None
            call()

        self._timer = loop.call_later(max(0.0, at - time.monotonic()), fire)
