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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

DEFAULT_QUANTUM = 2.0
"""Seconds, the default of ``fair_share_quantum``."""
_process_quantum = [DEFAULT_QUANTUM]


def set_quantum(seconds: float) -> None:
    """The process's quantum (the composition root sets it from the settings; a pool made before reads it too)."""
    _process_quantum[0] = max(0.0, seconds)


def process_quantum() -> float:
    return _process_quantum[0]


class Tenure:
    """When each holding of one pool began (``since``, as far as the pool knows), and a wake-up of the pool when a
    holding's quantum will have passed while a tenant waits for it. ``quantum`` None: the process's."""

    __slots__ = ("_quantum", "_timer", "_when", "next_turn", "since")

    def __init__(self, quantum: float | None = None) -> None:
        self._quantum = quantum
        self.since: dict[Any, float] = {}
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

    def longest_held(self, candidates: Iterable[tuple[str, Any]], now: float,
                     wake: Callable[[], None]) -> tuple[str, Any] | None:
        """Of ``candidates`` (tenant, holding), the one held longest among those held at least a quantum; None if
        every one is younger, and then ``wake`` is called when the first will have been."""
        quantum = self.quantum
        found: tuple[str, Any] | None = None
        oldest = soonest = float("inf")
        for candidate in candidates:
            began = self.since.setdefault(candidate[1], now)  # first looked at now: its tenure starts now
            if began + quantum > now:
                soonest = min(soonest, began + quantum)
            elif began < oldest:
                found, oldest = candidate, began
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
