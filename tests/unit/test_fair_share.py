"""The one admission rule of the shared pools (fairness/share.py), and the pools that use it: k tenants that each take
all they are given never starve the (k+1)th — in the memory budget, the egress connections, the sandbox slots and
the upstream connections — and as work ends, the tenants converge to equal shares."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from responses_bridge.fairness import share as fair_share
from responses_bridge.fairness.preemption import absorb_preemption
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.request import parse_request_object
from responses_bridge.run.subagents import COST_PER_SHARED_BYTE, subagent_worker
from responses_bridge.run.upstream import UpstreamFailure
from responses_bridge.run.upstream_gate import UpstreamGate
from responses_bridge.run.upstream_scope import upstream_scope
from responses_bridge.sandbox.egress.limits import ConnectionShares
from responses_bridge.sandbox.slots import FairSlots, busy_note
from responses_bridge.services.tenancy.memory_budget import SHARE_EXCEEDED, MemoryBudget

MiB = 1 << 20
TOOLS = [{"type": "function", "name": f"lookup_{at}", "description": "d" * 4096,
          "parameters": {"type": "object", "properties": {}}} for at in range(16)]


class Holder:
    """One piece of work of ``tenant``'s: a task that takes a unit (or ``size`` of a memory budget) and holds it
    until it is taken back (``outcome``: ``preempted`` and the pool named) or the test ends it."""

    def __init__(self, acquire: Callable[[], Awaitable[Any]], release: Callable[[Any], None]) -> None:
        self.outcome = "waiting"
        self.task = asyncio.create_task(self._hold(acquire, release))

    async def _hold(self, acquire: Callable[[], Awaitable[Any]], release: Callable[[Any], None]) -> None:
        try:
            got = await acquire()
        except APIError as refused:
            self.outcome = f"refused:{refused.code}"
            return
        except asyncio.CancelledError:
            self.outcome = f"preempted:{absorb_preemption()}"
            return
        if got is False or isinstance(got, str):
            self.outcome = f"refused:{got}"
            return
        self.outcome = "held"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            why = absorb_preemption()
            if why is None:
                raise
            self.outcome = f"preempted:{why}"
        finally:
            release(got)


def unit(slots: FairSlots, tenant: str, wait: float = 30) -> Holder:
    return Holder(lambda: slots.acquire_or_why(tenant, wait), lambda got: slots.release(tenant))


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def held(holders: list[Holder]) -> int:
    return sum(holder.outcome == "held" for holder in holders)


async def end(*groups: list[Holder]) -> None:
    tasks = [holder.task for group in groups for holder in group]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def preempted(*groups: list[Holder]) -> int:
    return sum(holder.outcome.startswith("preempted") for group in groups for holder in group)


async def finish(holders: list[Holder], count: int) -> None:
    """End ``count`` of ``holders`` that hold (their work done: the unit given back)."""
    ending = [holder for holder in holders if holder.outcome == "held"][:count]
    for holder in ending:
        holder.task.cancel()
    await asyncio.gather(*(holder.task for holder in ending), return_exceptions=True)
    for holder in ending:
        holder.outcome = "done"
    await settle()


@pytest.fixture
def stepped_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """fair_share's clock advanced a millisecond a reading: each tenant's service (unit-seconds held) follows the
    order of the test's events, not how fast a loaded machine runs them (a full run's: the victim's units served
    for as long as a greedy tenant's, its third unit went to that tenant)."""
    start, readings = time.monotonic(), itertools.count()
    monkeypatch.setattr(fair_share, "_monotonic", lambda: start + next(readings) * 0.001)


@pytest.mark.parametrize("greedy", [2, 4, 8])
@pytest.mark.parametrize("together", [False, True], ids=["one-after-another", "together"])
@pytest.mark.usefixtures("stepped_clock")
async def test_greedy_tenants_never_starve_the_next_one_in_a_pool_of_16(greedy: int, together: bool) -> None:
    """Main's rule: 4 greedy tenants wanting 10 each held 8+5+2+1 of 16 and a 5th got nothing. The newcomer is
    served at once, and nothing held is taken back for it (its work would be thrown away): the first greedy tenant
    takes its 8 alone, every later one its floor of the headroom (one unit, fairness/headroom.py), so half the pool
    less the floors stays free for a tenant holding nothing. Then the units the greedy tenants give back go round
    the tenants served least: within one round the newcomer holds C/n."""
    slots = FairSlots(16, lambda tenant: 8)
    tenants = [f"greedy{at}" for at in range(greedy)]
    holders: dict[str, list[Holder]] = {tenant: [] for tenant in tenants}
    for tenant in tenants:
        holders[tenant] += [unit(slots, tenant) for _ in range(10)]
        if not together:
            await settle()
    await settle()
    assert slots.busy == 8 + greedy - 1, slots.busy  # the headroom kept: each later greedy tenant its floor
    fair = 16 // (greedy + 1)
    victim = [unit(slots, "victim") for _ in range(fair)]
    await settle()
    assert held(victim) == 1 and not preempted(*holders.values())  # at once; nobody's work ended for it
    for _ in range((greedy + 1) * fair):  # one round: the work of the tenants holding most ends, a unit at a time
        await finish(max(holders.values(), key=held), 1)
    assert held(victim) == fair, [holder.outcome for holder in victim]
    assert not preempted(*holders.values())
    await end(victim, *holders.values())
    assert slots.busy == 0


async def test_a_tenant_under_its_share_waits_and_nothing_held_is_taken_back() -> None:
    slots = FairSlots(16, lambda tenant: 16)
    small = [unit(slots, "small") for _ in range(4)]
    big = [unit(slots, "big") for _ in range(14)]  # 4 held (the headroom's 8 kept beside small), 10 waiting
    await settle()
    assert held(small) == 4 and held(big) == 4
    newcomer = [unit(slots, "newcomer") for _ in range(5)]
    await settle()
    assert held(newcomer) == 1 and not preempted(small, big)  # its floor of the headroom, at once
    await finish(newcomer, 1)
    assert held(newcomer) == 1 and held(big) == 4  # its next call takes the floor it gave back, not big's waiters
    await finish(big, 4)  # big's work ends: what comes back above the headroom goes to the newcomer first, not
    # to big's own waiters queued first (one unit stays free: the headroom's, past the newcomer's floor)
    assert held(newcomer) >= 4 and held(newcomer) + held(big) == 5 and not preempted(small, big)
    await end(small, big, newcomer)


async def test_a_tenant_holding_nothing_is_never_told_it_holds_its_share() -> None:
    slots = FairSlots(2, lambda tenant: 2, queue=2)
    first = [unit(slots, "a"), unit(slots, "c")]
    await settle()
    assert await slots.acquire_or_why("b", 0.05) == "full"  # holds none: the pool is busy, not its share
    assert await slots.acquire_or_why("a", 0.05) == "share"  # a holds its 2 / 2
    await end(first)


async def test_the_queue_is_bounded_and_its_places_are_fair() -> None:
    slots = FairSlots(2, lambda tenant: 2, queue=3)
    hog = [unit(slots, "hog") for _ in range(2)]
    await settle()
    hog_waits = [unit(slots, "hog") for _ in range(3)]  # the queue full of the hog's own
    await settle()
    extra = unit(slots, "hog")  # past the bound: refused at once, saying so
    await settle()
    assert extra.outcome == "refused:queue"
    other = unit(slots, "other")  # the hog's newest wait gives it its place; nothing held is taken back
    await settle()
    assert other.outcome == "waiting" and not preempted(hog)
    assert [holder.outcome for holder in hog_waits] == ["waiting", "waiting", "refused:queue"]
    await finish(hog, 1)  # the first unit given back goes to it, before the hog's waiters queued first
    assert other.outcome == "held" and held(hog_waits) == 0
    await end(hog, hog_waits, [extra, other])
    assert slots.busy == 0


def budget_holder(budget: MemoryBudget, holder: str, size: int) -> Holder:
    return Holder(lambda: budget.reserve(size, holder=holder, wait=30), lambda got: got.release())


@pytest.mark.parametrize("together", [False, True], ids=["one-after-another", "together"])
async def test_memory_eight_greedy_tenants_leave_the_ninth_served(together: bool) -> None:
    """The geometric rule left 64 KiB of 256 MiB after 8 tenants, and a 9th's small requests got 0/20. Nothing held
    is ended for the 9th now (a reservation is not resumable): the room the greedy requests give back as they end
    goes round the tenants served least — the 9th and the greedy tenants that hold none yet — before those that
    hold theirs."""
    budget = MemoryBudget(256 * MiB)
    greedy: list[Holder] = []
    for at in range(8):
        greedy += [budget_holder(budget, f"greedy{at}", 64 << 10) for _ in range(80)]  # 1.9 MiB each
        if not together:
            await settle()
    await settle()
    # the first alone its share (128 MiB), the second what is left above the headroom (an eighth of the budget),
    # each later one its floor of the headroom (4 MiB: fairness/headroom.py)
    assert budget.held_by("greedy0") >= 126 * MiB and 94 * MiB <= budget.held_by("greedy1") <= 96 * MiB
    assert all(3 * MiB <= budget.held_by(f"greedy{at}") <= 4 * MiB for at in range(2, 8))
    answered = 0
    for _ in range(20):  # the 9th's ordinary requests, one after another, each at once
        (await budget.reserve(2048, holder="victim", wait=0.01)).release()
        answered += 1
    together_now = [await budget.reserve(2048, holder="victim", wait=0.01) for _ in range(5)]
    assert answered == 20 and budget.held_by("victim") == 5 * 2048 * 30
    for reservation in together_now:
        reservation.release()
    assert all(holder.outcome in ("held", "waiting") for holder in greedy)  # none ended for it
    await end(greedy)
    assert budget.held == 0


async def test_memory_share_refusal_only_for_a_holder_at_its_share() -> None:
    budget = MemoryBudget(100 * MiB)
    hog = await budget.charge("a", 50 * MiB)
    with pytest.raises(APIError) as caught:
        await budget.reserve(1 * MiB, holder="a", wait=0.01)  # past its alone cap: its share
    assert caught.value.code == SHARE_EXCEEDED
    budget.refusing = True  # the memory backstop: no new room past a small request's, and a holder holding nothing
    with pytest.raises(APIError) as caught:  # is told the server's
        await budget.reserve(1 * MiB, holder="b", wait=0.01)
    assert caught.value.code == "server_overloaded"
    budget.refusing = False
    hog.release()
    assert budget.held == 0


async def test_egress_connection_shares_leave_a_victim_a_connection_with_three_attackers() -> None:
    shares = ConnectionShares()

    def connection(tenant: str) -> Holder:
        async def admit() -> Any:
            refused = shares.admit(tenant, share=20, cap=40)
            return refused.outcome if refused is not None else True
        return Holder(admit, lambda got: shares.release(tenant))

    attackers = {tenant: [connection(tenant) for _ in range(30)] for tenant in ("a", "b", "c")}
    await settle()
    assert shares.total <= 40 and shares.held("a") <= 20
    for tenant, holders in attackers.items():
        assert 12 <= shares.held(tenant) <= 14, (tenant, shares.held(tenant))  # each about 40 / 3
        refusals = {holder.outcome for holder in holders if holder.outcome.startswith("refused")}
        assert refusals <= {"refused:tenant_connection_limit"}, refusals
    victim = [connection("victim") for _ in range(5)]
    await settle()
    assert held(victim) == 5 and shares.total <= 40
    await end(victim, *attackers.values())
    assert shares.total == 0


async def test_sandbox_slots_keep_their_api_and_the_next_tenant_gets_the_free_slot() -> None:
    slots = FairSlots(4, lambda tenant: 3)
    first = [unit(slots, "a") for _ in range(4)]  # the fourth waits on (no timing: a loaded machine)
    await settle()
    assert held(first) == 3
    b = unit(slots, "b", 0.01)  # the one left, at once
    await settle()
    assert b.outcome == "held"
    c = unit(slots, "c", 5)  # waits: nothing held is taken back for it
    await settle()
    assert c.outcome == "waiting" and slots.held("a") == 3
    await finish(first, 1)  # a's unit goes to c (served least), not to a's own waiter
    assert c.outcome == "held" and slots.held("a") == 2 and first[3].outcome == "waiting"
    await end(first, [b, c])


class _CountingUpstream:
    """An upstream client whose chat calls stay open until released, counting how many are open at once."""

    def __init__(self) -> None:
        self.open = 0
        self.most = 0
        self.go = asyncio.Event()

    @contextlib.asynccontextmanager
    async def chat(self, call: Any, authorization: str | None) -> AsyncIterator[Any]:
        self.open += 1
        self.most = max(self.most, self.open)
        try:
            await self.go.wait()
            yield None
        finally:
            self.open -= 1


async def _turn(client: Any) -> str:
    try:
        async with client.chat(None, None):
            return "answered"
    except UpstreamFailure as failure:
        return failure.error.code or ""
    except asyncio.CancelledError:  # drive.py's part: the run fails preempted_for_fairness
        if absorb_preemption() is None:
            raise
        return "preempted"


async def test_one_response_holds_at_most_its_places_and_its_other_subagents_wait() -> None:
    upstream = _CountingUpstream()
    gate = UpstreamGate(256, lambda tenant: 128, per_response=8, wait=5)
    response = gate.around(upstream, "t")  # type: ignore[arg-type]
    assert gate.around(response, "t") is response  # a subagent's turn keeps its root's places
    turns = [asyncio.create_task(_turn(response)) for _ in range(64)]  # 64 subagents' turns at once
    for _ in range(20):
        await asyncio.sleep(0)
    assert upstream.open == 8
    upstream.go.set()
    assert await asyncio.gather(*turns) == ["answered"] * 64 and upstream.most == 8


async def test_upstream_places_are_shared_fairly_and_a_call_without_one_is_refused_naming_the_settings() -> None:
    upstream = _CountingUpstream()
    gate = UpstreamGate(12, lambda tenant: 6, per_response=64, wait=0.05)
    attackers = [asyncio.create_task(_turn(gate.around(upstream, tenant)))  # type: ignore[arg-type]
                 for tenant in ("a", "b") for _ in range(12)]
    await settle()
    held = [gate.slots.held(tenant) for tenant in ("a", "b")]
    # a alone 6; b beside it its floor of the headroom (fairness/headroom.py): half the places kept free
    assert held == [6, 1], held
    victim = asyncio.create_task(_turn(gate.around(upstream, "victim")))  # type: ignore[arg-type]
    await settle()
    assert gate.slots.held("victim") == 1  # at once, beside two tenants that want all of them
    await asyncio.sleep(0.2)  # past the wait: the attackers' calls that found no place are refused
    upstream.go.set()
    outcomes = await asyncio.gather(*attackers)
    assert outcomes.count("answered") == 7 and set(outcomes) == {"answered", "upstream_connections_exceeded"}
    assert await victim == "answered"  # no call in flight was ended for it
    assert "RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS" in gate.refused().message
    assert "share" not in gate.refused("full").message and "share" in gate.refused("share").message
    assert "0.05 s this call waited" in gate.refused("full").message


async def test_a_subagent_without_room_in_the_budget_fails_saying_so_and_holds_nothing() -> None:
    """Its piece of work reserves for its tools and context before its run is begun; refused, its result says why
    and the tenant's place it took is given back."""
    request = parse_request_object({"model": "m", "input": "hi", "tools": TOOLS})
    budget = MemoryBudget(64 * MiB)
    places: list[str] = []

    class Place:
        def release(self) -> None:
            places.remove("taken")

    def admit(tenant: str) -> Place:
        places.append("taken")
        return Place()

    charged: list[int] = []

    async def charge(tenant: str, size: int) -> Any:
        charged.append(size)
        return await budget.charge(tenant, size)

    def never_begun() -> Any:
        raise AssertionError("a refused subagent's run was begun")

    hog = await budget.charge("t", 32 * MiB)  # the tenant holds its share already
    worker = subagent_worker(request, never_begun, "t", admit, charge)
    with upstream_scope(_CountingUpstream(), None):  # type: ignore[arg-type]
        answer = await worker([{"type": "message", "role": "user", "content": "task"}])
    assert answer.status == "failed" and answer.text.startswith("The subagent could not start: ")
    assert "MEMORY_BUDGET_SHARE" in answer.text
    assert charged and charged[0] >= COST_PER_SHARED_BYTE * len(orjson.dumps(TOOLS)) and not places
    hog.release()
    assert budget.held == 0


async def test_a_subagent_cancelled_while_it_waits_for_its_responses_place_takes_none_and_passes_it_on() -> None:
    upstream = _CountingUpstream()
    gate = UpstreamGate(16, lambda tenant: 16, per_response=1, wait=5)
    response = gate.around(upstream, "t")  # type: ignore[arg-type]
    first = asyncio.create_task(_turn(response))
    waiting = [asyncio.create_task(_turn(response)) for _ in range(2)]
    for _ in range(10):
        await asyncio.sleep(0)
    waiting[0].cancel()  # interrupted while it waits: the place passes to the next
    upstream.go.set()
    assert await first == "answered" and await waiting[1] == "answered"
    assert gate.slots.busy == 0 and upstream.most == 1


async def test_a_sandbox_refusal_says_nothing_of_what_other_tenants_hold() -> None:
    """Main told a tenant refused a sandbox that "1 of them" was its own, its share, whoever held them; the note
    now says the tenant's share only when it holds it, and never a count of anyone's."""
    slots = FairSlots(1, lambda tenant: 1, what="sandbox slots")
    other = unit(slots, "other")
    await settle()
    why = await slots.acquire_or_why("asker", 0.01)  # holds nothing: the other tenant holds its share, 1 of 1
    assert why == "full"
    note = busy_note(why, 1, 0.01)
    assert "this tenant" not in note and "share" not in note and "of them" not in note, note
    own = FairSlots(2, lambda tenant: 1, what="sandbox slots")
    mine = unit(own, "asker")
    await settle()
    why = await own.acquire_or_why("asker", 0.01)  # at its own share alone
    assert why == "share" and "this tenant's runs hold its fair share" in busy_note(why, 2, 0.01)
    await end([other, mine])


async def test_a_sandbox_queue_refusal_says_nothing_of_what_other_tenants_hold() -> None:
    """The queue's refusal lands on the tenant holding and waiting the most (here the asker, beside another tenant
    holding one): its note says the pool is busy and the queue full, the rule it went by — no one's count."""
    slots = FairSlots(2, lambda tenant: 1, what="sandbox slots", queue=1)
    other, mine, waiting = unit(slots, "other"), unit(slots, "asker"), unit(slots, "asker")
    await settle()
    assert (other.outcome, mine.outcome, waiting.outcome) == ("held", "held", "waiting")
    why = await slots.acquire_or_why("asker", 0.01)
    assert why == "queue"
    note = busy_note(why, 2, 0.01)
    assert "all 2 sandboxes are busy" in note and "queue of runs waiting for one is full" in note, note
    assert "1" not in note and "of them" not in note and "this tenant" not in note and "share" not in note, note
    await end([other, mine, waiting])


async def test_a_waiting_tenant_at_its_own_cap_lets_the_next_waiter_pass() -> None:
    slots = FairSlots(4, lambda tenant: 1 if tenant == "capped" else 4)
    hog = [unit(slots, "hog") for _ in range(5)]  # 4 held, 1 waiting
    await settle()
    capped = [unit(slots, "capped", 0.3) for _ in range(2)]
    await settle()
    await finish(hog, 1)
    assert capped[0].outcome == "held" and slots.held("hog") == 3  # served least: the unit given back is its
    third = unit(slots, "third")  # waits behind capped
    await settle()
    await finish(hog, 1)  # capped is at its cap of 1: the next waiter gets this one (the hog's is kept from the
    # headroom's last unit beside two tenants: fairness/headroom.py)
    assert capped[1].outcome == "waiting" and third.outcome == "held" and hog[4].outcome == "waiting"
    for _ in range(40):
        await asyncio.sleep(0.02)
        if capped[1].outcome != "waiting":
            break
    assert capped[1].outcome == "refused:share" and not preempted(hog)  # its own cap, said so
    await end(hog, capped, [third])


async def test_a_lone_tenant_gets_the_whole_pool_and_again_once_the_others_window_has_passed() -> None:
    """Work-conserving alone (fairness/headroom.py): no headroom while nobody else holds, waits, or left within the
    window (the service time constant: 4 quanta, 0.2 s here); within it, the headroom is kept, and the lone
    tenant's waiters are given the rest once it passes (a timer, not a request's release)."""
    slots = FairSlots(16, lambda tenant: 16, quantum=0.05)
    lone = [unit(slots, "lone") for _ in range(16)]
    await settle()
    assert held(lone) == 16  # the whole pool
    await end(lone)
    visitor = [unit(slots, "visitor")]
    await settle()
    await end(visitor)  # it leaves: for the window the pool is still shared
    lone = [unit(slots, "lone") for _ in range(16)]
    await settle()
    assert held(lone) == 8  # above the headroom only
    for _ in range(100):
        if held(lone) == 16:
            break
        await asyncio.sleep(0.02)
    assert held(lone) == 16  # the window passed: the whole pool again, without anything given back
    await end(lone)
    assert slots.busy == 0


async def test_the_headroom_holds_eight_fresh_tenants_floors_and_the_ninth_waits_its_turn() -> None:
    """The bound as built (docs/operations.md): half of 16 kept, a floor of one each, so beside a tenant holding
    its 8 alone eight more tenants holding nothing are served at once; the tenth key in a row finds none free and
    waits — the backstop is the queue: the first unit given back goes to it, served least."""
    slots = FairSlots(16, lambda tenant: 8)
    first = [unit(slots, "first") for _ in range(10)]
    await settle()
    fresh = {f"fresh{at}": [unit(slots, f"fresh{at}") for _ in range(3)] for at in range(8)}
    await settle()
    assert held(first) == 8 and all(held(holders) == 1 for holders in fresh.values()) and slots.busy == 16
    tenth = unit(slots, "tenth")
    await settle()
    assert tenth.outcome == "waiting"
    await finish(first, 1)
    assert tenth.outcome == "held" and not preempted(first, *fresh.values())
    await end(first, [tenth], *fresh.values())
    assert slots.busy == 0


async def test_a_tenant_kept_out_of_the_headroom_is_told_its_share_and_a_tenant_holding_none_is_not() -> None:
    """Beside another tenant, a tenant holding its floor is refused, past its wait, for its own share (the
    headroom is kept for tenants holding less: fairness/headroom.py) — though units are free; one holding none is
    served from it at once."""
    slots = FairSlots(16, lambda tenant: 8)
    first = [unit(slots, "first") for _ in range(8)]
    second = [unit(slots, "second")]
    await settle()
    assert held(first) == 8 and held(second) == 1 and slots.busy == 9
    assert await slots.acquire_or_why("second", 0.05) == "share"
    assert await slots.acquire_or_why("third", 0.05) is None  # holding none: its floor, at once
    slots.release("third")
    await end(first, second)
    assert slots.busy == 0
