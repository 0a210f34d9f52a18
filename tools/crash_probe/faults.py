"""The faults ``scripts/crash-probe`` strikes each round (``--fault``), between the round's load and its check.

* ``kill`` (the default): ``kill -9`` of one sidecar (the replicas' in turn), started again on the same store.
* ``db-outage`` (``--store postgres``): every replica reaches PostgreSQL through a loopback proxy of its own
  (tests/support/db_cut.py); each round one replica's (in turn) is cut for ``--outage`` seconds — longer than a
  lease, so the other replica takes its runs over — then restored, while the cut replica still runs them. Its
  writes must be fenced off (docs/state.md, "Fenced writers"): no run ends twice, no input is answered twice.
* ``clock-skew`` (``--store postgres``): the second replica runs with its wall clock ``--skew`` seconds off
  (tests/support/clock_skew: ``time.time`` and ``datetime.now`` moved); each round is load on both, no process
  dying. Leases are taken and judged by the database's clock, so the skewed replica takes over no live run:
  every run ends once, and none is *resumed* (a resume here is a live run taken over).

The proxy and the interposer are the tests' (checkout-only, as the PostgreSQL server the probe starts).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

FAULTS = ("kill", "db-outage", "clock-skew")


class Struck(Protocol):
    """A sidecar of the probe's (crash_probe.Sidecar)."""

    env: dict[str, str]

    def kill(self) -> None: ...

    async def start(self) -> None: ...


class Cuttable(Protocol):
    """A replica's path to its database (tests.support.db_cut.CutProxy)."""

    def cut(self) -> None: ...

    def restore(self) -> None: ...


class Fault(Protocol):
    async def strike(self, round_no: int, sidecars: Sequence[Struck]) -> None:
        """The round's fault, struck once its load is under way; returns once every sidecar serves again."""


class Kill:
    async def strike(self, round_no: int, sidecars: Sequence[Struck]) -> None:
        victim = sidecars[(round_no - 1) % len(sidecars)]
        victim.kill()
        await victim.start()


class Outage:
    """One replica's database connections reset for ``seconds`` (each replica's in turn), then restored."""

    def __init__(self, proxies: Sequence[Cuttable], seconds: float) -> None:
        self.proxies = proxies  # one per replica
        self.seconds = seconds

    async def strike(self, round_no: int, sidecars: Sequence[Struck]) -> None:
        proxy = self.proxies[(round_no - 1) % len(self.proxies)]
        proxy.cut()
        try:
            await asyncio.sleep(self.seconds)
        finally:
            proxy.restore()


class Standing:
    """A fault that holds all along (a replica's wrong clock): nothing to strike."""

    async def strike(self, round_no: int, sidecars: Sequence[Struck]) -> None:
        return None


@contextlib.asynccontextmanager
async def prepared(fault: str, sidecars: Sequence[Struck], database_url: str | None, *, outage: float,
                   skew: float) -> AsyncIterator[Fault]:
    """The fault, with what it needs set in the sidecars' environments before they start (their database URLs
    through the proxies; the skewed replica's interposer)."""
    if fault == "kill":
        yield Kill()
        return
    if database_url is None or len(sidecars) < 2:
        raise SystemExit(f"crash-probe: --fault {fault} needs --store postgres (two replicas on one database)")
    if fault == "clock-skew":
        from tests.support.clock_skew import skewed_env  # checkout-only: the tests' interposer

        sidecars[-1].env.update(skewed_env(skew))
        yield Standing()
        return
    from tests.support.db_cut import cut_proxy  # checkout-only: the tests' loopback proxy

    async with contextlib.AsyncExitStack() as stack:
        proxies = []
        for sidecar in sidecars:
            proxy = await stack.enter_async_context(cut_proxy(database_url))
            sidecar.env["RESPONSES_BRIDGE_DATABASE_URL"] = proxy.url_for(database_url)
            proxies.append(proxy)
        yield Outage(proxies, outage)
