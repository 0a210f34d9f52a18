"""Share by service over time (fairness/share.py, fairness/tenure.py), in the pool itself with real clocks kept short:
the attacker's findings against the rule before, each beside its control.

* One take-back starved a tenant for good: waiters were ranked by when they were last taken from, an absolute time
  kept while the tenant was idle, so after one take-back a victim's short calls ranked behind every other tenant.
* Work longer than the quantum never finished once tenants outnumbered units: taken back, again and again, and the
  pool's useful work collapsed (a model call taken back is thrown away, not paused).

Now nothing held is taken back for fairness, and a freed unit goes to the waiting tenant served least lately
(decayed unit-seconds). Waits here are bounded (no timing assertions)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

from responses_bridge.fairness.preemption import absorb_preemption
from responses_bridge.fairness.share import FairPool
from responses_bridge.fairness.slots import FairSlots
from responses_bridge.fairness.tenure import RENORMALISE
from responses_bridge.run.upstream import UpstreamFailure
from responses_bridge.run.upstream_gate import UpstreamGate
from tests.unit.test_fair_share import end, settle, unit

QUANTUM = 0.02  # the rule before took back a unit held past it; service decays over 4 of them here


async def _call(slots: FairSlots, tenant: str, seconds: float, wait: float = 5.0) -> str:
    """One piece of work of ``seconds``: ``done`` if it ran to its end, ``preempted`` if taken back, else the
    refusal."""
    try:
        why = await slots.acquire_or_why(tenant, wait)
    except asyncio.CancelledError:
        if absorb_preemption() is None:
            raise
        return "preempted"
    if why is not None:
        return why
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if absorb_preemption() is None:
            raise
        return "preempted"
    finally:
        slots.release(tenant)
    return "done"


@contextlib.asynccontextmanager
async def _looping(slots: FairSlots, tenants: list[str], seconds: float) -> AsyncIterator[list[str]]:
    """Each of ``tenants`` calls ``seconds`` again as soon as its call ends, until the block ends; the outcomes."""
    outcomes: list[str] = []

    async def loop(tenant: str) -> None:
        while True:
            outcomes.append(await _call(slots, tenant, seconds))

    tasks = [asyncio.create_task(loop(tenant)) for tenant in tenants]
    try:
        yield outcomes
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_victims_long_call_completes_beside_twelve_short_call_tenants_and_then_its_short_calls_are_served(
        ) -> None:
    """Before: the victim's call, the only one past the quantum, was taken back; its short calls after it were
    refused (0/8) while a fresh tenant's were served. Now it runs to its end, and its short calls are served as a
    fresh tenant's are."""
    slots = FairSlots(4, lambda tenant: 3, quantum=QUANTUM)
    attackers = [f"sybil{at}" for at in range(12)]
    async with _looping(slots, attackers, QUANTUM / 2) as outcomes:
        await asyncio.sleep(QUANTUM)
        long_call = await _call(slots, "victim", 20 * QUANTUM)
        victim = [await _call(slots, "victim", QUANTUM / 4, wait=1.0) for _ in range(8)]
        fresh = [await _call(slots, "fresh", QUANTUM / 4, wait=1.0) for _ in range(8)]
    assert long_call == "done"
    assert victim == fresh == ["done"] * 8, (victim, fresh)
    assert "preempted" not in outcomes and slots.pool.preempted == 0


async def test_sixteen_greedy_tenants_lose_no_work_and_the_victims_call_completes() -> None:
    """Before: 16 greedy tenants × 3 calls longer than the quantum on 4 units were taken back over and over (each
    one thrown away), and the victim's call with them. Now every call that starts runs to its end."""
    slots = FairSlots(4, lambda tenant: 2, queue=64, quantum=QUANTUM)
    greedy = [f"greedy{at}" for at in range(16) for _ in range(3)]
    async with _looping(slots, greedy, 5 * QUANTUM) as outcomes:
        await asyncio.sleep(QUANTUM)
        victim = await _call(slots, "victim", 5 * QUANTUM)
        for _ in range(200):  # some of the greedy calls done too
            if outcomes.count("done") >= 8:
                break
            await asyncio.sleep(QUANTUM)
    assert victim == "done"
    assert outcomes.count("done") >= 8 and "preempted" not in outcomes and slots.pool.preempted == 0


async def test_a_freed_unit_goes_to_the_waiting_tenant_served_least_lately() -> None:
    """Three tenants held a unit 0.2, 0.1 and 0 s before they wait together (queued in that order): the units given
    back go to them least served first. Before, all holding none, they were served first come first."""
    slots = FairSlots(3, lambda tenant: 3, quantum=1.0)  # service forgotten over 4 s: little decays here
    for tenant, seconds in (("most", 0.2), ("some", 0.1)):
        assert await _call(slots, tenant, seconds) == "done"
    hog = [unit(slots, "hog") for _ in range(3)]
    await settle()
    waiting = {tenant: unit(slots, tenant) for tenant in ("most", "some", "none")}
    await settle()
    served: list[str] = []
    for holder in hog:
        holder.task.cancel()
        await asyncio.gather(holder.task, return_exceptions=True)
        await settle()
        served.extend(tenant for tenant, got in waiting.items() if got.outcome == "held" and tenant not in served)
    assert served == ["none", "some", "most"]
    await end(list(waiting.values()))


async def test_what_a_waiting_tenant_holds_counts_until_the_unit_is_given() -> None:
    """A greedy tenant that queued for more the moment it was given its units was keyed as unserved: without
    counting what it held since, the units given back went to it before a victim served a little, long before."""
    slots = FairSlots(3, lambda tenant: 3, quantum=1.0)
    assert await _call(slots, "victim", 0.05) == "done"
    other = unit(slots, "other")
    await settle()
    greedy = [unit(slots, "greedy") for _ in range(3)]  # 2 held, 1 queued at once
    await settle()
    await asyncio.sleep(0.3)  # the greedy tenant's 0.6 unit-seconds since it queued
    victim = unit(slots, "victim")
    await settle()
    other.task.cancel()  # another tenant's unit comes back: the greedy tenant has no event of its own
    await asyncio.gather(other.task, return_exceptions=True)
    await settle()
    assert (victim.outcome, greedy[2].outcome) == ("held", "waiting")
    assert slots.pool.preempted == 0
    await end([victim], greedy)


async def test_service_is_forgotten_so_a_tenant_served_long_ago_is_a_fresh_tenant() -> None:
    """No standing only ever worsens: a tenant that held the pool long ago ranks, a few time constants later, as
    one that never held it — before one served just now."""
    slots = FairSlots(1, lambda tenant: 1, quantum=0.01)  # forgotten over 0.04 s
    assert await _call(slots, "long_ago", 0.2) == "done"
    before = slots.pool.attained("long_ago")
    await asyncio.sleep(0.5)  # over 12 time constants
    assert slots.pool.attained("long_ago") < before / 1000
    assert await _call(slots, "lately", 0.01) == "done"
    hog = unit(slots, "hog")
    await settle()
    late, old = unit(slots, "lately"), unit(slots, "long_ago")  # queued first: the one served lately
    await settle()
    hog.task.cancel()
    await asyncio.gather(hog.task, return_exceptions=True)
    await settle()
    assert (old.outcome, late.outcome) == ("held", "waiting")
    await end([late, old])


async def test_the_records_are_rescaled_before_the_factor_overflows_and_keep_their_order() -> None:
    slots = FairSlots(1, lambda tenant: 1, quantum=1.0)
    pool = slots.pool
    assert await _call(slots, "a", 0.05) == "done"
    assert await _call(slots, "b", 0.01) == "done"
    pool.service.origin -= (RENORMALISE + 1) * pool.service.time_constant()  # as if 200 time constants had passed
    hog = unit(slots, "hog")
    await settle()
    a, b = unit(slots, "a"), unit(slots, "b")
    await settle()
    hog.task.cancel()  # its release brings its record up to date: the factor would be e^201
    await asyncio.gather(hog.task, return_exceptions=True)
    await settle()
    assert pool.service.origin > time.monotonic() - 1 and all(
        state.served < 1.0 for state in itertools.chain(pool.tenants.values(), pool._idle.values()))
    assert (a.outcome, b.outcome) == ("waiting", "held")
    await end([a, b])


async def test_the_queue_and_the_records_stay_bounded_and_consistent_under_churn() -> None:
    """Thousands of tenants waiting, withdrawn and served: nothing is left held or waiting, the heap's stale
    entries are dropped, and idle records are bounded."""
    pool = FairPool(8, lambda tenant: 8, what="t", queue=4096, units=True)

    async def one(tenant: str, wait: float) -> None:
        with contextlib.suppress(Exception):
            await pool.take(tenant, 1, wait)
            await asyncio.sleep(0)
            pool.give(tenant, 1)

    await asyncio.gather(*(one(f"t{at % 3000}", 0.0 if at % 5 == 0 else 5.0) for at in range(6000)))
    assert pool.held == 0 and pool.waiting == 0 and not pool.tenants
    assert len(pool._heap) <= 64 and len(pool._idle) <= 4096 + 1


class _Upstream:
    def __init__(self) -> None:
        self.go = asyncio.Event()

    @contextlib.asynccontextmanager
    async def chat(self, call: Any, authorization: str | None) -> AsyncIterator[Any]:
        await self.go.wait()
        yield None


async def _turn(client: Any) -> str:
    try:
        async with client.chat(None, None):
            return "answered"
    except UpstreamFailure as failure:
        return failure.error.code or ""


async def test_a_durable_runs_call_waits_for_a_place_past_the_wait_that_refuses_a_synchronous_one() -> None:
    """A background response's or a session turn's model call is a step boundary: it waits at its tenant's place
    and resumes, where a synchronous request's call is refused after the connect timeout."""
    upstream = _Upstream()
    gate = UpstreamGate(2, lambda tenant: 2, per_response=4, wait=0.05)
    busy = [asyncio.create_task(_turn(gate.around(upstream, "other"))) for _ in range(2)]  # type: ignore[arg-type]
    await settle()
    synchronous = asyncio.create_task(_turn(gate.around(upstream, "t")))  # type: ignore[arg-type]
    durable = asyncio.create_task(_turn(gate.around(upstream, "t", durable=True)))  # type: ignore[arg-type]
    assert await synchronous == "upstream_connections_exceeded"
    await asyncio.sleep(0.2)  # four times the wait
    assert not durable.done()
    upstream.go.set()
    assert await durable == "answered" and await asyncio.gather(*busy) == ["answered"] * 2
    assert gate.slots.busy == 0


async def test_an_egress_connection_beside_as_many_tenants_as_the_cap_waits_for_one_to_end_and_none_is_closed(
        ) -> None:
    """Before, a connection held past the quantum was closed for a tenant holding none (its code saw a reset); now
    the newcomer's connection waits (up to two quanta) and takes the place of the first one to end."""
    from responses_bridge.fairness.tenure import process_quantum, set_quantum
    from responses_bridge.sandbox.egress.limits import ConnectionShares

    before = process_quantum()
    set_quantum(0.3)  # a wait of 0.6 s (the rule before: a turn past 0.3 s)
    try:
        await _egress_case(ConnectionShares())
    finally:
        set_quantum(before)


async def _egress_case(shares: Any) -> None:

    async def connection(tenant: str, release: asyncio.Event) -> str:
        refused = shares.admit(tenant, share=1, cap=4)
        if refused is not None:
            if not refused.turn:
                return refused.outcome
            refused = await shares.wait_turn(tenant, 4)
            if refused is not None:
                return refused.outcome
        try:
            await release.wait()
        except asyncio.CancelledError:
            if absorb_preemption() is None:
                raise
            return "closed"
        finally:
            shares.release(tenant)
        return "done"

    ends = {tenant: asyncio.Event() for tenant in ("a", "b", "c", "d", "victim")}
    held = {tenant: asyncio.create_task(connection(tenant, ends[tenant])) for tenant in ("a", "b", "c", "d")}
    await settle()
    victim = asyncio.create_task(connection("victim", ends["victim"]))
    await asyncio.sleep(0.4)  # past the rule before's quantum: it closed the connection held longest
    assert shares.total == 4 and not victim.done() and not any(task.done() for task in held.values())
    ends["a"].set()
    assert await held["a"] == "done"
    await settle()
    assert shares.held("victim") == 1 and shares.total == 4
    for tenant in ("b", "c", "d", "victim"):
        ends[tenant].set()
    assert await asyncio.gather(*(held[tenant] for tenant in "bcd"), victim) == ["done"] * 4
    assert shares.total == 0
