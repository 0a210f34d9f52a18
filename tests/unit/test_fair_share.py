"""The one admission rule of the shared pools (fair_share.py), and the pools that use it: k tenants that each take
all they are given never starve the (k+1)th — in the memory budget, the egress connections, the sandbox slots and
the upstream connections — and as work ends, the tenants converge to equal shares."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from responses_bridge.fair_share import FairShare
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.request import parse_request_object
from responses_bridge.run.subagents import COST_PER_SHARED_BYTE, subagent_worker
from responses_bridge.run.upstream import UpstreamFailure
from responses_bridge.run.upstream_gate import UpstreamGate
from responses_bridge.run.upstream_scope import upstream_scope
from responses_bridge.sandbox.egress_limits import ConnectionShares
from responses_bridge.sandbox.slots import FairSlots
from responses_bridge.services.memory_budget import SHARE_EXCEEDED, MemoryBudget

MiB = 1 << 20
TOOLS = [{"type": "function", "name": f"lookup_{at}", "description": "d" * 4096,
          "parameters": {"type": "object", "properties": {}}} for at in range(16)]


def greedy(rule: FairShare, holdings: dict[str, int], tenant: str, unit: int) -> int:
    """``tenant`` takes ``unit`` after ``unit`` until the rule refuses; what it then holds."""
    while rule.admits(sum(holdings.values()), holdings.get(tenant, 0), unit):
        holdings[tenant] = holdings.get(tenant, 0) + unit
    return holdings.get(tenant, 0)


@pytest.mark.parametrize("attackers", [1, 2, 3, 5])
def test_any_number_of_greedy_tenants_leave_the_next_one_room(attackers: int) -> None:
    rule = FairShare(1024, 512)
    holdings: dict[str, int] = {}
    for n in range(attackers):
        greedy(rule, holdings, f"attacker{n}", 1)
    assert holdings["attacker0"] == 512  # alone: the share setting, as before
    free = 1024 - sum(holdings.values())
    assert free >= 1024 // (2 * 3 ** (attackers - 1))  # each left at least half what it took: 1/2, 1/6, 1/18 ...
    assert rule.admits(sum(holdings.values()), 0, 1), "the next tenant was starved"
    assert greedy(rule, holdings, "victim", 1) >= free // 3


def test_the_old_fixed_share_was_starved_by_two() -> None:
    """What the rule replaces: each at most half, so two take it all (the attack of issue 56)."""
    capacity, share = 1024, 512
    holdings = {"a": share, "b": share}
    assert sum(holdings.values()) == capacity
    assert not FairShare(capacity, share).admits(sum(holdings.values()), 0, 1)  # and the rule never lets it be
    rule = FairShare(capacity, share)
    assert not rule.admits(512, 0, 512) and rule.admits(512, 0, 341) and not rule.admits(512, 0, 342)


def test_one_tenant_alone_reaches_its_cap_and_a_single_tenant_pool_all_of_it() -> None:
    assert greedy(FairShare(40, 20), {}, "a", 1) == 20
    assert greedy(FairShare(40, 40), {}, "a", 1) == 40
    assert greedy(FairShare(4, 3, floor=1), {}, "a", 1) == 3


def test_a_unit_pool_gives_a_newcomer_its_first_unit_whenever_one_is_free() -> None:
    rule = FairShare(4, 3, floor=1)
    holdings = {"a": 3}
    assert greedy(rule, holdings, "b", 1) == 1
    assert not rule.admits(4, 0, 1)  # full: the third waits for a unit to be given back


def test_a_tenants_own_ceiling_is_kept() -> None:
    rule = FairShare(8, 7, floor=1)
    assert not rule.admits(0, 2, 1, cap=2) and rule.admits(0, 1, 1, cap=2)


def test_by_share_tells_a_tenants_share_from_a_full_pool() -> None:
    rule = FairShare(100, 50)
    assert rule.by_share(50, 0, 40)  # room for it, but it would leave less than half what it holds
    assert not rule.by_share(100, 0, 1)  # no room at all: the pool is full
    assert not rule.by_share(50, 0, 10)  # admitted


async def test_memory_budget_two_and_three_attackers_leave_a_victim_served() -> None:
    for attackers in (2, 3):
        budget = MemoryBudget(1024 * MiB)
        held = []
        for n in range(attackers):
            for _ in range(2):  # each attacker's 18 MiB bodies: 540 MiB each, a share at most
                try:
                    held.append(await budget.reserve(18 * MiB, holder=f"attacker{n}", wait=0.01))
                except APIError as refused:  # past its fair share
                    assert refused.code == SHARE_EXCEEDED
        assert budget.held_by("attacker0") == 512 * MiB
        for _ in range(6):  # the victim's ordinary requests, one after another, each answered
            (await budget.reserve(256 << 10, holder="victim", wait=0.01)).release()
        together = [await budget.reserve(256 << 10, holder="victim", wait=0.01) for _ in range(6)]
        assert budget.held_by("victim") == 6 * 30 * (256 << 10)
        for reservation in [*held, *together]:
            reservation.release()
        assert budget.held == 0


async def test_memory_budget_freed_room_goes_to_the_holder_that_holds_least() -> None:
    budget = MemoryBudget(100, 0.5)
    budget.share_bytes = 50  # whole bytes, for the arithmetic
    first = await budget._take("a", 50)
    waiting = asyncio.create_task(budget._take("b", 40, wait=5))
    await asyncio.sleep(0)
    assert not waiting.done()  # 40 would leave 10 free, less than half what it holds
    budget._give_back("a", first)
    assert await waiting == 40 and budget.held_by("b") == 40


def test_egress_connection_shares_leave_a_victim_a_connection_with_three_attackers() -> None:
    shares = ConnectionShares()
    for attacker in ("a", "b", "c"):
        while shares.admit(attacker, share=20, cap=40) is None:
            pass
    assert shares.held("a") == 20 and shares.held("b") < 20 and shares.held("c") < shares.held("b")
    assert shares.admit("victim", share=20, cap=40) is None
    refused = None
    while refused is None:
        refused = shares.admit("a", share=20, cap=40)
    assert refused.outcome == "tenant_connection_limit" and "TENANT_CONNECTIONS" in refused.message


async def test_sandbox_slots_keep_their_api_and_the_next_tenant_gets_the_free_slot() -> None:
    slots = FairSlots(4, lambda tenant: 3)
    for _ in range(3):
        assert await slots.acquire("a", 0.01)
    assert not await slots.acquire("a", 0.01)  # its share
    assert await slots.acquire("b", 0.01)  # the one left, at once
    waiting = asyncio.create_task(slots.acquire("c", 5))
    await asyncio.sleep(0)
    slots.release("a")
    assert await waiting and slots.held("c") == 1


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
                 for tenant in ("a", "b", "c") for _ in range(12)]
    for _ in range(20):
        await asyncio.sleep(0)
    held = [gate.slots.held(tenant) for tenant in ("a", "b", "c")]
    assert held[0] == 6 and sum(held) < 12, held  # alone 6; then each no more than twice what it leaves
    victim = asyncio.create_task(_turn(gate.around(upstream, "victim")))  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)
    assert gate.slots.held("victim") == 1  # at once, beside three tenants that want all of them
    await asyncio.sleep(0.2)  # past the wait: the attackers' calls that found no place are refused
    upstream.go.set()
    refused = [code for code in await asyncio.gather(*attackers) if code != "answered"]
    assert refused and set(refused) == {"upstream_connections_exceeded"}
    assert await victim == "answered"
    assert "RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS" in gate.refused().message


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
