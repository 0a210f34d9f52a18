"""The process's memory budget for requests in flight (services/memory_budget.py): what a request reserves, that it
comes back however the request ends, that new work waits for room and gets the 503 past the wait, and that a
request larger than the whole budget still runs alone. The doors' use of it: tests/integration/test_memory_budget.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from responses_bridge import memory_limits
from responses_bridge.memory_limits import default_budget
from responses_bridge.protocol.errors import APIError
from responses_bridge.services.memory_budget import COST_PER_BODY_BYTE, OVERLOADED, Held, MemoryBudget

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
    budget = MemoryBudget(40 * MiB)
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


async def test_a_request_larger_than_the_budget_runs_alone_and_no_budget_holds_nothing() -> None:
    budget = MemoryBudget(10 * MiB)
    alone = await budget.reserve(64 * MiB)
    assert alone.bytes == 10 * MiB
    with pytest.raises(APIError):
        await budget.reserve(1, wait=0.01)
    alone.release()
    assert (await MemoryBudget(0).reserve(64 * MiB)).bytes == 0


async def test_held_reserves_once_and_gives_back_what_it_reserved() -> None:
    budget = MemoryBudget(100 * MiB)
    held = Held(budget)
    held.release()  # nothing reserved yet: nothing to give back
    await held.reserve(MiB)
    await held.reserve(2 * MiB)  # the size is judged once
    assert budget.held == COST_PER_BODY_BYTE * MiB
    held.release()
    assert budget.held == 0


def test_the_default_is_half_the_cgroup_s_limit_else_the_machine_s_per_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limit = tmp_path / "memory.max"
    limit.write_text("8589934592\n")
    monkeypatch.setattr(memory_limits, "CGROUP_LIMITS", (limit,))
    assert default_budget(1) == 4 << 30 and default_budget(4) == 1 << 30
    limit.write_text("max\n")  # v2 without a limit: the machine's memory
    assert default_budget(1) == max(64 * MiB, memory_limits._machine_memory() // 2)  # type: ignore[operator]
