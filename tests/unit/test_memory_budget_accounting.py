"""The process's memory budget for requests in flight (services/tenancy/memory_budget.py): what a request reserves, that
it comes back however the request ends, that new work waits for room and gets the 503 past the wait, that a body holds
its steps as they arrive, that a caller holds at most its share (and the others are served), and that a request
larger than a share still runs alone. The doors' use of it: tests/integration/test_memory_budget.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from responses_bridge.fairness import memory_limits
from responses_bridge.fairness.memory_charge import BODY_OBJECT_COST, body_cost
from responses_bridge.fairness.memory_limits import default_budget
from responses_bridge.protocol.errors import APIError
from responses_bridge.services.tenancy.body_admission import BodyAdmission
from responses_bridge.services.tenancy.memory_budget import (
    COST_PER_BODY_BYTE,
    OVERLOADED,
    SHARE_EXCEEDED,
    STEP_COST,
    Held,
    MemoryBudget,
)

MiB = 1 << 20


async def test_a_reservation_is_its_body_times_the_cost_and_comes_back_once() -> None:
    budget = MemoryBudget(100 * MiB)
    held = await budget.reserve(MiB)
    assert held.bytes == COST_PER_BODY_BYTE * MiB and budget.held == held.bytes
    held.release()
    held.release()  # idempotent: every exit path may call it
    assert budget.held == 0
    assert (await budget.reserve(0)).bytes == 0 and budget.held == 0  # no body, nothing held


async def test_past_the_budget_new_work_waits_for_room_then_gets_the_503() -> None:
    budget = MemoryBudget(40 * MiB, share=1.0)
    first = await budget.reserve(MiB)  # 30 MiB of 40
    waiting = asyncio.create_task(budget.reserve(MiB, wait=5.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    first.release()  # room: the waiting one goes in
    second = await waiting
    assert budget.held == second.bytes
    with pytest.raises(APIError) as caught:
        await budget.reserve(MiB, wait=0.05)
    assert (caught.value.status, caught.value.code, caught.value.type) == (503, OVERLOADED, "server_error")
    assert "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES" in caught.value.message
    second.release()
    assert budget.held == 0


async def test_a_request_larger_than_its_share_runs_alone_and_no_budget_holds_nothing() -> None:
    budget = MemoryBudget(10 * MiB, share=1.0)
    alone = await budget.reserve(64 * MiB)
    assert alone.bytes == 10 * MiB
    with pytest.raises(APIError):
        await budget.reserve(1, wait=0.01)
    alone.release()
    shared = MemoryBudget(10 * MiB)  # half alone: the largest request holds a share, and another caller is served
    alone = await shared.reserve(64 * MiB, holder="a")
    assert alone.bytes == 5 * MiB and (await shared.reserve(MiB // 16, holder="b")).bytes == 30 * MiB // 16
    alone.release()
    assert (await MemoryBudget(0).reserve(64 * MiB)).bytes == 0


async def test_held_grows_a_step_at_a_time_as_the_body_arrives_and_gives_back_what_it_reserved() -> None:
    budget = MemoryBudget(100 * MiB)
    held = Held(budget)
    held.release()  # nothing reserved yet: nothing to give back
    body = BodyAdmission(held, 0, 64 * MiB)
    await body.add(b"x")  # one byte of a declared 64 MiB holds one step, not the declared total
    assert budget.held == STEP_COST
    await body.add(b"{" * (STEP_COST // BODY_OBJECT_COST))  # past a step's cost: a second step
    assert budget.held == 2 * STEP_COST
    parts = Held(budget)  # a body in two chunks: a step while it arrives, its cost once whole
    halves = BodyAdmission(parts, 0, 18)
    await halves.add(b'{"a":')
    assert parts.bytes == STEP_COST
    await halves.add(b'"0123456789"}')
    assert parts.bytes == body_cost(b'{"a":"0123456789"}') and halves.body() == b'{"a":"0123456789"}'
    parts.release()
    whole = Held(budget)
    small = b'{"model":"m","input":[' + b'{"role":"user","content":"x"},' * 9 + b'{"role":"user","content":"x"}]}'
    await BodyAdmission(whole, 0, len(small)).add(small)  # a whole body: what it costs, by its shape
    assert whole.bytes == body_cost(small) == 3 * len(small) + 11 * BODY_OBJECT_COST
    held.release()
    whole.release()
    assert budget.held == 0


async def test_a_caller_at_its_share_is_refused_naming_it_while_another_is_served() -> None:
    budget = MemoryBudget(64 * MiB)  # a share of 32 MiB
    attacker = [Held(budget, "attacker") for _ in range(40)]
    taken = [held.try_cover(STEP_COST) for held in attacker]  # forty idle bodies, a step each
    assert taken.count(True) == 32 * MiB // STEP_COST
    assert budget.held_by("attacker") <= 32 * MiB
    with pytest.raises(APIError) as caught:
        await budget.reserve(MiB // 8, holder="attacker", wait=0.01)
    assert (caught.value.status, caught.value.code) == (503, SHARE_EXCEEDED)
    assert "RESPONSES_BRIDGE_MEMORY_BUDGET_SHARE" in caught.value.message
    victim = await budget.reserve(MiB // 2, holder="victim", wait=0.01)  # the other half is the others'
    assert victim.bytes == 15 * MiB
    for held in attacker:
        held.release()
    victim.release()
    assert budget.held == 0 and budget.by_holder == {}


async def test_room_that_comes_back_goes_first_to_the_waiter_whose_holder_holds_least() -> None:
    budget = MemoryBudget(60 * MiB, share=1.0)
    big = await budget.reserve(MiB, holder="big")  # 30 MiB
    small = await budget.reserve(MiB, holder="small")  # 30 MiB: the budget is full
    first = asyncio.create_task(budget.reserve(MiB, holder="big", wait=5.0))
    second = asyncio.create_task(budget.reserve(MiB, holder="fresh", wait=5.0))
    await asyncio.sleep(0.05)
    small.release()  # room for one: "fresh" holds nothing, "big" holds 30 MiB
    granted = await second
    assert not first.done() and granted.holder == "fresh"
    big.release()
    (await first).release()
    granted.release()
    assert budget.held == 0


async def test_a_waiter_that_goes_away_keeps_nothing() -> None:
    budget = MemoryBudget(30 * MiB)
    full = await budget.reserve(MiB, holder="a")
    waiting = asyncio.create_task(budget.reserve(MiB // 4, holder="a", wait=5.0))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    full.release()
    assert budget.held == 0 and budget.by_holder == {}


def test_without_tenants_callers_are_told_apart_by_their_key_never_kept() -> None:
    anonymous = MemoryBudget(MiB, by_client_key=True)
    one, other = anonymous.holder("default", "Bearer sk-one"), anonymous.holder("default", "Bearer sk-two")
    assert one != other and "sk-one" not in one and anonymous.holder("default", None) == "default"
    assert MemoryBudget(MiB).holder("tenant-a", "Bearer sk-one") == "tenant-a"


def test_the_default_is_half_the_cgroup_s_limit_else_the_machine_s_per_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limit = tmp_path / "memory.max"
    limit.write_text("8589934592\n")
    monkeypatch.setattr(memory_limits, "CGROUP_LIMITS", (limit,))
    assert default_budget(1) == 4 << 30 and default_budget(4) == 1 << 30
    limit.write_text("max\n")  # v2 without a limit: the machine's memory
    assert default_budget(1) == max(64 * MiB, memory_limits._machine_memory() // 2)  # type: ignore[operator]
