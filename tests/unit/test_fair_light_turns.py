"""A light tenant's turn beside more tenants than units (fair_tenure.py): a tenant holding none that has been served
at most half as much as a holder lately takes back that holder's unit even before its quantum has passed (once held
``quantum / C``), and among waiters holding as little the least served, then the least claiming, comes first.

Before, a victim arriving just after greedy tenants had been handed every unit waited for one to come of age (a
quantum), behind greedy tenants that had queued before it: beside 16 greedy tenants on 8 sandbox slots its first
call took 2.9 s, its calls alone ~0.1 s.

The quantum is set long (60 s) and tenures and service are backdated or set through the pool's records, so nothing
here waits on a clock."""

from __future__ import annotations

import time

from responses_bridge.fair_share import FairSlots
from tests.unit.test_fair_share import end, settle, unit
from tests.unit.test_fair_turns import QUANTUM, _greedy, backdate, paced, preempted

YOUNG = QUANTUM * 3 / 4  # held less than a quantum, more than quantum / C for C = 2


def served(slots: FairSlots, tenant: str, seconds: float) -> None:
    """As if ``tenant``'s holdings that ended had held units ``seconds`` in all, just now."""
    slots.pool.tenure.served[tenant] = (seconds, time.monotonic())


async def test_a_tenant_served_far_less_takes_back_a_young_unit_of_the_tenant_served_most() -> None:
    slots = FairSlots(2, lambda tenant: 2, quantum=QUANTUM)
    greedy = await _greedy(slots, 2, 2)  # each holds one and waits for one more
    backdate(slots, *greedy, by=YOUNG)  # both young: the quantum's rule takes neither
    served(slots, "greedy1", 10 * QUANTUM)  # it held units long before
    victim = unit(slots, "victim")
    await settle()
    assert victim.outcome == "held" and preempted(greedy) == ["greedy1"]
    # the tenant taken from holds none and waits, served far more than the victim: it takes nothing back (within
    # its quantum nothing at all; after it, not a young unit of a tenant served less)
    slots.pool.tenants["greedy1"].taken_at -= 2 * QUANTUM
    backdate(slots, "victim", by=YOUNG)
    paced(slots)
    slots.pool._dispatch()
    await settle()
    assert victim.outcome == "held" and preempted(greedy) == ["greedy1"] and slots.held("greedy1") == 0
    await end([victim], *greedy.values())


async def test_a_tenant_served_as_much_as_the_holders_waits_for_a_unit_past_its_quantum() -> None:
    slots = FairSlots(2, lambda tenant: 2, quantum=QUANTUM)
    greedy = await _greedy(slots, 2, 2)
    backdate(slots, *greedy, by=YOUNG)
    served(slots, "peer", YOUNG)  # served lately as much as each holder: no young unit is taken for it
    peer = unit(slots, "peer")
    await settle()
    assert peer.outcome == "waiting" and not preempted(greedy)
    backdate(slots, "greedy0", by=2 * QUANTUM)  # past its quantum: the rule of fair_tenure.py as before
    slots.pool._dispatch()
    await settle()
    assert peer.outcome == "held" and preempted(greedy) == ["greedy0"]
    await end([peer], *greedy.values())


async def test_a_light_turn_waits_for_a_unit_held_a_turns_spacing_and_for_the_pacing() -> None:
    slots = FairSlots(2, lambda tenant: 2, quantum=QUANTUM)
    greedy = await _greedy(slots, 2, 2)  # their units just stamped: younger than quantum / C
    victim = unit(slots, "victim")
    await settle()
    assert victim.outcome == "waiting" and not preempted(greedy)
    backdate(slots, *greedy, by=YOUNG)
    slots.pool.tenure.next_turn = time.monotonic() + QUANTUM  # a turn was just taken
    slots.pool._dispatch()
    await settle()
    assert victim.outcome == "waiting" and not preempted(greedy)
    paced(slots)
    slots.pool._dispatch()
    await settle()
    assert victim.outcome == "held" and len(preempted(greedy)) == 1
    await end([victim], *greedy.values())


async def test_among_tenants_holding_none_the_least_claiming_takes_the_turn_before_greedy_ones_queued_first() -> None:
    """Max-min fairness serves the smallest demand first: a greedy tenant holding none with three calls queued,
    never served and never taken from, queued before the victim's one call; the one turn goes to the victim (by
    first come it went to the greedy tenant, and the victim's first call waited a turn per such tenant)."""
    slots = FairSlots(2, lambda tenant: 2, quantum=QUANTUM)
    greedy = await _greedy(slots, 2, 2)
    queued = [unit(slots, "greedy2") for _ in range(3)]  # every unit just stamped: it waits
    await settle()
    assert all(holder.outcome == "waiting" for holder in queued)
    victim = unit(slots, "victim")
    await settle()
    assert victim.outcome == "waiting"
    backdate(slots, "greedy0", by=2 * QUANTUM)  # one unit past its quantum: one turn to give
    slots.pool._dispatch()
    await settle()
    assert victim.outcome == "held" and all(holder.outcome == "waiting" for holder in queued)
    assert preempted(greedy) == ["greedy0"]
    await end([victim], queued, *greedy.values())


async def test_a_tenants_service_is_counted_only_while_the_pool_is_contended() -> None:
    slots = FairSlots(2, lambda tenant: 2, quantum=QUANTUM)
    alone = [unit(slots, "alone"), unit(slots, "alone")]
    await settle()
    await end(alone)
    assert not slots.pool.tenure.served  # the hot path reads no clock and keeps no record
    greedy = await _greedy(slots, 2, 2)
    backdate(slots, "greedy0", by=5.0)
    await end(greedy["greedy0"])
    held, _ = slots.pool.tenure.served["greedy0"]  # as recorded at its end: read later, it has decayed a little
    assert 5.0 <= held < 5.5
    assert "greedy1" not in slots.pool.tenure.served
    await end(*greedy.values())


async def test_a_tenant_whose_excess_the_full_queue_refused_does_not_look_as_light_as_the_victim() -> None:
    """On the 4 program slots beside 16 greedy tenants the queue (16 places) leaves each greedy tenant one waiter:
    by what it holds and waits it claims as little as the victim, and the victim's first call was 12th in line.
    A tenant refused by the full queue within a quantum goes after one that was not."""
    slots = FairSlots(2, lambda tenant: 2, quantum=QUANTUM, queue=2)
    greedy = {tenant: [unit(slots, tenant)] for tenant in ("greedy0", "greedy1")}
    await settle()
    excess = [unit(slots, "greedy2") for _ in range(3)]  # two wait, the third is refused: the queue is full
    await settle()
    assert [holder.outcome for holder in excess] == ["waiting", "waiting", "refused:queue"]
    await end(excess[1:])  # greedy2 is left one waiter, as the victim will have
    victim = unit(slots, "victim")
    await settle()
    assert victim.outcome == "waiting" and excess[0].outcome == "waiting"
    backdate(slots, "greedy0", by=2 * QUANTUM)  # one turn to give
    slots.pool._dispatch()
    await settle()
    assert victim.outcome == "held" and excess[0].outcome == "waiting" and preempted(greedy) == ["greedy0"]
    await end([victim], excess, *greedy.values())


async def test_a_unit_of_a_tenant_asking_no_more_is_spared_while_a_greedy_tenants_may_go() -> None:
    """A victim's one call (its program starved of CPU by greedy tenants' endless loops) outlived a quantum and,
    held longest, was taken back — its retry then waited a whole round. A greedy tenant's unit past its quantum
    goes first, though held less long; and a light tenant's young-unit turn never takes the victim's."""
    slots = FairSlots(2, lambda tenant: 2, quantum=QUANTUM)
    greedy = {"greedy0": [unit(slots, "greedy0"), unit(slots, "greedy0")]}  # holds two, one is taken back below
    victim = unit(slots, "victim")
    await settle()
    greedy0 = [holder for holder in greedy["greedy0"] if holder.outcome == "held"]
    assert victim.outcome == "held" and len(greedy0) == 1 and slots.held("greedy0") == 1
    backdate(slots, "victim", by=3 * QUANTUM)  # the victim's call held longest
    backdate(slots, "greedy0", by=2 * QUANTUM)
    paced(slots)
    greedy["greedy0"].append(unit(slots, "greedy0"))  # greedy0 wants more: it waits while it holds
    light = unit(slots, "light")
    await settle()
    assert light.outcome == "held" and victim.outcome == "held" and greedy0[0].outcome.startswith("preempted")
    # a young unit for a light tenant: never the victim's (asking no more), though served most
    served(slots, "victim", 10 * QUANTUM)
    backdate(slots, "victim", by=YOUNG)
    paced(slots)
    other = unit(slots, "other")
    await settle()
    assert victim.outcome == "held" and other.outcome == "waiting"
    await end([victim, light, other], *greedy.values())


def test_service_records_decayed_to_nothing_are_dropped_past_the_bound() -> None:
    from responses_bridge.fair_tenure import SERVED_KEPT, Tenure

    tenure = Tenure(1.0)
    now = time.monotonic()
    tenure.served = {f"old{at}": (1.0, now - 1000) for at in range(SERVED_KEPT + 254)}
    tenure.served["recent"] = (1.0, now)
    tenure.since["holding"] = now - 1.0
    tenure.ended("new", "holding")  # the 256th new tenant past the bound: one scan
    after = time.monotonic()
    # what ended() recorded (its held second and what passed since ``now``, however loaded the machine), not read
    # back later: decayed by every moment the check waits
    assert set(tenure.served) == {"recent", "new"} and 1.0 <= tenure.served["new"][0] <= 1.0 + (after - now)
