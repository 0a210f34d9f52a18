"""More tenants than units (fair_share.py, fair_tenure.py): every tenant holding one unit is above its fair share
``C / n < 1``, so a tenant holding none takes back a unit that has been held a quantum — the one held longest —
and the tenant it was taken from takes none back that way within a quantum of losing it, so units are time-shared
rather than passed back and forth. Before, a tenant holding one was never taken from for one holding none, and a
newcomer beside as many greedy tenants as units waited until some unit ended.

The quantum is set long (60 s) and tenures are backdated through the pool's stamps, so nothing here waits on a
clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from responses_bridge.fair_share import FairSlots
from responses_bridge.fair_tenure import Tenure
from responses_bridge.sandbox.egress_limits import ConnectionShares
from tests.unit.test_fair_share import Holder, end, held, settle, unit

QUANTUM = 60.0


def backdate(slots: FairSlots, *tenants: str, by: float = 2 * QUANTUM) -> None:
    """Every holding of ``tenants`` as if taken ``by`` seconds ago (held past its quantum)."""
    pool = slots.pool
    for tenant in tenants:
        for holding in pool.tenants[tenant].holdings:
            pool.since[holding] = time.monotonic() - by


def paced(slots: FairSlots) -> None:
    """As if ``quantum / C`` had passed since the pool's last turn (turns are paced: fair_tenure.py)."""
    slots.pool.tenure.next_turn = 0.0


async def _greedy(slots: FairSlots, count: int, each: int) -> dict[str, list[Holder]]:
    """``count`` greedy tenants each wanting ``each`` units, settled (each at its ``C / n``), and only the holders
    and waiters left: those taken back while they settled are dropped."""
    holders = {f"greedy{at}": [unit(slots, f"greedy{at}") for _ in range(each)] for at in range(count)}
    await settle()
    assert slots.busy == slots.total
    return {tenant: [holder for holder in group if not holder.outcome.startswith("preempted")]
            for tenant, group in holders.items()}


def preempted(holders: dict[str, list[Holder]]) -> list[str]:
    return [tenant for tenant, group in holders.items() for holder in group if holder.outcome.startswith("preempted")]


async def test_a_tenant_holding_none_takes_back_a_unit_held_past_its_quantum_beside_more_tenants_than_units() -> None:
    slots = FairSlots(4, lambda tenant: 3, quantum=QUANTUM)
    greedy = await _greedy(slots, 4, 3)
    assert all(slots.held(tenant) == 1 for tenant in greedy)  # the rule's C / n with n = C
    backdate(slots, *greedy)
    victim = unit(slots, "victim")
    await settle()
    assert victim.outcome == "held"
    assert len(preempted(greedy)) == 1 and slots.held("victim") == 1 and slots.busy == 4
    # the tenant it was taken from holds none but lost its unit just now: it takes none back (no back and forth),
    # and no other greedy tenant's unit goes either
    await settle()
    assert len(preempted(greedy)) == 1 and victim.outcome == "held"
    await end([victim], *greedy.values())
    assert slots.busy == 0 and not slots.pool.since


async def test_no_unit_is_taken_back_within_its_quantum() -> None:
    slots = FairSlots(4, lambda tenant: 3, quantum=QUANTUM)
    greedy = await _greedy(slots, 4, 2)
    victim = unit(slots, "victim", wait=0.1)  # every unit young: it waits, and is told the pool is busy
    for _ in range(50):
        await asyncio.sleep(0.02)
        if victim.outcome != "waiting":
            break
    assert victim.outcome == "refused:full" and not preempted(greedy)
    await end([victim], *greedy.values())


async def test_the_unit_held_longest_goes_first_and_a_young_one_never() -> None:
    slots = FairSlots(4, lambda tenant: 3, quantum=QUANTUM)
    greedy = await _greedy(slots, 4, 2)
    backdate(slots, "greedy2", by=3 * QUANTUM)
    backdate(slots, "greedy1")
    first = unit(slots, "first")
    await settle()
    assert first.outcome == "held" and preempted(greedy) == ["greedy2"]
    second = unit(slots, "second")
    await settle()
    assert second.outcome == "waiting"  # a unit is old enough, but the turns are paced (quantum / C apart)
    paced(slots)
    slots.pool._dispatch()  # (the pool's own wake-up, at that time)
    await settle()
    assert second.outcome == "held" and sorted(preempted(greedy)) == ["greedy1", "greedy2"]
    third = unit(slots, "third", wait=0.1)  # greedy0's and greedy3's units and the newcomers' own are young
    await settle()
    assert third.outcome == "waiting"
    await end([first, second, third], *greedy.values())


async def test_a_tenant_whose_unit_was_taken_back_waits_out_its_quantum_then_takes_its_turn() -> None:
    slots = FairSlots(2, lambda tenant: 2, quantum=QUANTUM)
    greedy = await _greedy(slots, 2, 3)  # each holds one and waits for more
    backdate(slots, *greedy)
    victim = unit(slots, "victim")
    await settle()
    assert victim.outcome == "held"
    [loser] = preempted(greedy)
    other = next(tenant for tenant in greedy if tenant != loser)
    backdate(slots, other)
    slots.pool.tenants[loser].taken_at -= 2 * QUANTUM  # its quantum since it lost its unit has passed
    paced(slots)
    slots.pool._dispatch()  # (the pool's own wake-up, fair_tenure.Tenure.wake, at that time)
    await settle()
    # its turn: the other greedy tenant's unit, held past its quantum — never the victim's young one
    assert victim.outcome == "held" and sorted(preempted(greedy)) == sorted([loser, other])
    assert slots.held(loser) == 1 and slots.held(other) == 0
    await end([victim], *greedy.values())


async def test_the_pool_wakes_a_waiting_tenant_when_a_quantum_passes() -> None:
    slots = FairSlots(2, lambda tenant: 2, quantum=0.05)
    greedy = await _greedy(slots, 2, 2)
    victim = unit(slots, "victim", wait=30)  # nothing is given back: only the pool's wake-up can serve it
    for _ in range(500):
        await asyncio.sleep(0.01)
        if victim.outcome != "waiting":
            break
    assert victim.outcome == "held" and len(preempted(greedy)) == 1
    await end([victim], *greedy.values())


async def test_an_uncontended_pool_stamps_nothing() -> None:
    """The hot path (room free, nobody waiting) reads no clock and keeps no stamp."""
    slots = FairSlots(4, lambda tenant: 4, quantum=QUANTUM)
    holders = [unit(slots, f"t{at}") for at in range(4)]
    await settle()
    assert held(holders) == 4 and not slots.pool.since
    await end(holders)
    assert slots.busy == 0 and not slots.pool.since


def test_a_tenure_reads_the_process_quantum_unless_given_its_own() -> None:
    from responses_bridge.fair_tenure import process_quantum, set_quantum

    before = process_quantum()
    try:
        set_quantum(7.0)
        assert Tenure().quantum == 7.0 and Tenure(0.5).quantum == 0.5
    finally:
        set_quantum(before)


async def test_egress_connections_beside_as_many_tenants_as_the_cap_a_victim_gets_one_held_past_its_quantum() -> None:
    """Egress connections never wait: a victim's connection beside 4 tenants holding one each of a cap of 4 was
    refused ``bridge_connection_limit``; now the connection held longest past its quantum is closed for it, and
    while every one is younger the victim is refused as before."""
    shares = ConnectionShares()
    shares._pool.tenure = Tenure(QUANTUM)
    shares._pool.since = shares._pool.tenure.since

    def connection(tenant: str) -> Holder:
        async def admit() -> Any:
            refused = shares.admit(tenant, share=2, cap=4)
            return refused.outcome if refused is not None else True
        return Holder(admit, lambda got: shares.release(tenant))

    attackers = {f"a{at}": [connection(f"a{at}")] for at in range(4)}
    await settle()
    assert shares.total == 4
    early = connection("victim")
    await settle()
    assert early.outcome == "refused:bridge_connection_limit" and not preempted(attackers)
    for tenant in attackers:
        for holding in shares._pool.tenants[tenant].holdings:
            shares._pool.since[holding] = time.monotonic() - 2 * QUANTUM
    victim = connection("victim")
    await settle()
    assert victim.outcome == "held" and len(preempted(attackers)) == 1 and shares.total == 4
    await end([early, victim], *attackers.values())
    assert shares.total == 0


async def test_among_tenants_holding_none_one_never_taken_from_takes_its_turn_first() -> None:
    """A greedy tenant holding none that queued first does not keep the victim waiting: the turn goes to the tenant
    never taken from (then to the one taken from longest ago). With first come first served, 16 greedy tenants on
    8 places kept the victim behind their queued requests past the pool's timeout (3 of 20 answered 503)."""
    slots = FairSlots(2, lambda tenant: 2, quantum=QUANTUM)
    greedy = await _greedy(slots, 2, 2)
    waiting = unit(slots, "greedy2")  # every unit young: it waits
    await settle()
    assert waiting.outcome == "waiting"
    slots.pool.tenants["greedy2"].taken_at = time.monotonic() - 10 * QUANTUM  # taken from once, long ago
    backdate(slots, "greedy0")  # one unit past its quantum: one turn to give
    victim = unit(slots, "victim")
    await settle()
    assert victim.outcome == "held" and waiting.outcome == "waiting" and len(preempted(greedy)) == 1
    await end([victim, waiting], *greedy.values())


async def test_an_egress_connection_of_a_tenant_holding_none_waits_for_its_turn_and_the_cap_holds() -> None:
    from responses_bridge.fair_tenure import process_quantum, set_quantum
    from responses_bridge.sandbox.egress_limits import ConnectionShares

    shares, before, ended = ConnectionShares(), process_quantum(), []
    set_quantum(0.05)

    async def hold(tenant: str) -> None:
        assert shares.admit(tenant, share=1, cap=2) is None
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ended.append(tenant)
            raise
        finally:
            shares.release(tenant)

    async def victim() -> tuple[object, int, int]:
        refused = shares.admit("c", share=1, cap=2)  # the admission alone: refused, as before
        assert refused is not None and refused.outcome == "bridge_connection_limit" and refused.turn, refused
        waited = await shares.wait_turn("c", 2)
        total, mine = shares.total, shares.held("c")
        if waited is None:
            shares.release("c")
        return waited, total, mine

    holders = [asyncio.create_task(hold(tenant)) for tenant in ("a", "b")]
    try:
        await asyncio.sleep(0)
        waited, total, mine = await asyncio.create_task(victim())
        assert waited is None and total == 2 and mine == 1  # its turn came, within the cap
        assert ended == ["a"] or ended == ["b"], ended  # the one held longest was closed for it
    finally:
        set_quantum(before)
        for holder in holders:
            holder.cancel()
        await asyncio.gather(*holders, return_exceptions=True)


async def test_a_tenant_asking_no_more_keeps_its_unit_from_a_tenant_served_more() -> None:
    """Beside more tenants than units on a loaded machine, a victim's one short call outlived its quantum while every
    greedy unit was young (the paced turns hand them on as they come of age): the quantum rule took the victim's
    unit for a greedy tenant served far more (test_fair_pools.py's sandbox case, ``503 preempted_for_fairness``
    three times in a row). A tenant asking no more now keeps its unit from an asker served more than it has been."""
    slots = FairSlots(2, lambda tenant: 2, quantum=QUANTUM)
    victim = unit(slots, "victim")
    greedy = [unit(slots, "greedy0") for _ in range(2)]  # one held, one waiting: it wants more
    await settle()
    assert victim.outcome == "held" and [holder.outcome for holder in greedy] == ["held", "waiting"]
    backdate(slots, "victim")  # its call outlived its quantum; greedy0's unit is young
    slots.pool.tenure.served["greedy1"] = (5 * QUANTUM, time.monotonic())  # served far more than the victim
    asker = unit(slots, "greedy1", wait=0.1)
    paced(slots)
    slots.pool._dispatch()
    await settle()
    assert victim.outcome == "held" and asker.outcome == "waiting"
    await end([victim, asker], greedy)
