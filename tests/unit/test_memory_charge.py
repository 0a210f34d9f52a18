"""What a request loads beyond its body is reserved for it before it is loaded (fairness/memory_charge.py), from what
the store knows of it (its rows' sizes and count), and the memory backstop ends first the requests of the holder
charged most (services/tenancy/memory_watch.py): a real store's ``previous_response_id`` history, conversation and
referenced items grow the holding its door set by their predicted cost, and come back with the request; a history
that does not fit its holder's room waits and is refused naming its size, before a row is read; a tool's output,
held already, is charged past the share; twelve small requests of one holder, charged their history, are ended
before one larger honest request. The doors' use of it: tests/integration/test_memory_blame.py,
tests/integration/test_memory_truth.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from responses_bridge.fairness.memory_charge import (
    COST_PER_TOOL_OUTPUT_BYTE,
    HOLDING,
    charge,
    hold,
    loaded_cost,
    release_hold,
)
from responses_bridge.fairness.preemption import absorb_preemption
from responses_bridge.protocol.errors import APIError
from responses_bridge.services.tenancy.memory_budget import Held, MemoryBudget, Reservation
from responses_bridge.services.tenancy.memory_watch import MemoryWatch, victims
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT
from tests.support.stores import KINDS, open_stores
from tests.unit.test_store import make_response, user_item

MiB = 1 << 20


async def test_a_charge_grows_the_current_requests_holding_past_its_share_and_comes_back_with_it() -> None:
    budget = MemoryBudget(4 * MiB, 0.5)
    held = Held(budget, "attacker")
    await held.cover(3000)  # a tiny body: 3,000 bytes of the budget
    assert budget.held_by("attacker") == 3000
    token = hold(held)
    try:
        charge(MiB, COST_PER_TOOL_OUTPUT_BYTE)  # a tool's 1 MiB output: past the 2 MiB share and the 4 MiB budget
    finally:
        release_hold(token)
    assert held.bytes == budget.held_by("attacker") == 3000 + COST_PER_TOOL_OUTPUT_BYTE * MiB
    assert budget.held == held.bytes
    with pytest.raises(APIError) as refused:  # its next request is refused by its share
        await budget.reserve(100, holder="attacker", wait=0.05)
    assert refused.value.code == "memory_share_exceeded"
    held.release()
    assert budget.held_by("attacker") == 0
    charge(MiB, 8)  # no request set: nothing to charge
    token = hold(held)
    charge(MiB, 8)  # a released request's holding stays released
    release_hold(token)
    assert budget.held_by("attacker") == 0 and HOLDING.get() is None


async def test_a_request_without_a_body_is_charged_nothing() -> None:
    budget = MemoryBudget(4 * MiB)
    held = Held(budget, "a")
    held.grow(MiB)
    assert held.bytes == 0 and budget.held == 0


async def test_a_chains_history_loaded_from_a_real_store_is_charged_to_the_request_continuing_it(
        tmp_path: Path) -> None:
    items = [user_item(f"in_{index:05d}", "x") for index in range(2_000)]
    budget = MemoryBudget(64 * MiB)
    async with SQLiteResponseStore(str(tmp_path / "bridge.db")) as store:
        await store.save_response(make_response("resp_long"), items, tenant=DEFAULT_TENANT)
        held = Held(budget, "attacker")
        await held.cover(1800)
        before = held.bytes

        async def continuing() -> list[dict[str, object]] | None:  # the door's task, as adapters/http/limits.py
            hold(held)
            return await store.load_history("resp_long", tenant=DEFAULT_TENANT)

        loaded = await asyncio.create_task(continuing())
        assert loaded is not None and len(loaded) == len(items) + 1
        stored = loaded_cost(sum(len(orjson.dumps(item)) for item in loaded), len(loaded))
        charged = held.bytes - before
        assert stored * 0.9 <= charged <= stored * 1.1, (charged, stored)
        assert await store.load_history("resp_long", tenant=DEFAULT_TENANT)  # no request here: charged to none
        assert held.bytes - before == charged
        held.release()
    assert budget.held == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_a_history_that_does_not_fit_waits_and_is_refused_naming_its_size_before_it_is_loaded(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The holder's room holds one such history, not two: the second request waits for room, and is refused with
    the 503 naming the history and its size, nothing held for it; once the first ends, it fits. A history larger
    than a holder may hold alone is refused at once, a 400 naming it."""
    items = [user_item(f"it_{index:04d}", "x") for index in range(3_000)]
    cost = loaded_cost(3_000 * 140, 3_000)
    budget = MemoryBudget(int(cost * 3.2), 0.5)  # a share of 1.6 histories
    async with open_stores(kind, request, tmp_path) as stores:
        await stores.responses.save_response(make_response("resp_h"), items, tenant=DEFAULT_TENANT)

        def loading(held: Held) -> asyncio.Task[Any]:
            """The history loaded within ``held``'s request, in a task of its own (a request's context)."""
            return asyncio.create_task(within(held, lambda: stores.responses.load_history(
                "resp_h", tenant=DEFAULT_TENANT)))

        first = Held(budget, "attacker")
        await first.cover(1800)
        assert await loading(first)
        second = Held(budget, "attacker")
        await second.cover(1800)
        with pytest.raises(APIError) as refused:
            await loading(second)
        assert (refused.value.status, refused.value.code) == (503, "memory_share_exceeded")
        assert "previous_response_id 'resp_h'" in refused.value.message and "3001 items" in refused.value.message
        assert second.bytes == 1800  # nothing loaded, nothing held for it
        first.release()
        assert await loading(second)  # room again: it fits
        second.release()
        small = MemoryBudget(cost, 0.5)  # a share of half a history: it never fits
        alone = Held(small, "attacker")
        await alone.cover(1800)
        with pytest.raises(APIError) as too_large:
            await loading(alone)
        assert (too_large.value.status, too_large.value.code) == (400, "history_too_large")
        assert "3001 items" in too_large.value.message
        alone.release()
    assert budget.held == 0 and small.held == 0


async def within(held: Held, load: Callable[[], Awaitable[Any]]) -> Any:
    """``load`` in a task of its own whose request holds ``held`` (as a door's task does)."""
    hold(held)
    return await load()


@pytest.mark.parametrize("kind", KINDS)
async def test_every_load_of_stored_items_is_charged_on_both_stores(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """A chain's history, a conversation's items and the items an ``item_reference`` names: each load reserves for
    the current request its rows' predicted cost (bytes and items), on SQLite and on PostgreSQL."""
    items = [user_item(f"it_{index:04d}", "x") for index in range(300)]
    budget = MemoryBudget(64 * MiB)
    async with open_stores(kind, request, tmp_path) as stores:
        await stores.responses.save_response(make_response("resp_c"), items, tenant=DEFAULT_TENANT)
        await stores.conversations.create_conversation("conv_c", 100, {}, items, tenant=DEFAULT_TENANT)
        loads = {
            "history": lambda: stores.responses.load_history("resp_c", tenant=DEFAULT_TENANT),
            "conversation": lambda: stores.conversations.load_items("conv_c", tenant=DEFAULT_TENANT),
            "references": lambda: stores.responses.find_items(["it_0001", "it_0002"], tenant=DEFAULT_TENANT)}
        for what, load in loads.items():
            held = Held(budget, "a")
            await held.cover(1800)
            before = held.bytes
            loaded = await asyncio.create_task(within(held, load))
            values = list(loaded.values()) if isinstance(loaded, dict) else loaded
            stored = loaded_cost(sum(len(orjson.dumps(item)) for item in values), len(values))
            assert stored * 0.8 <= held.bytes - before <= stored * 1.25, (what, held.bytes - before, stored)
            held.release()
    assert budget.held == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_references_to_stored_items_are_charged_for_every_occurrence_on_both_stores(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """An item named by 50 references becomes 50 items: the store's measure counts each occurrence (de-duplicated,
    250 references to one 1 MiB item were charged 1 MiB), while the rows are read once."""
    items = [user_item("it_big", "x" * 20_000), user_item("it_small", "y")]
    budget = MemoryBudget(256 * MiB)
    async with open_stores(kind, request, tmp_path) as stores:
        await stores.responses.save_response(make_response("resp_r"), items, tenant=DEFAULT_TENANT)
        held = Held(budget, "a")
        await held.cover(1800)
        named = ["it_big"] * 50 + ["it_small", "it_nowhere"]
        found = await asyncio.create_task(within(held, lambda: stores.responses.find_items(
            named, tenant=DEFAULT_TENANT)))
        assert set(found) == {"it_big", "it_small"}
        expanded = loaded_cost(50 * len(orjson.dumps(found["it_big"])) + len(orjson.dumps(found["it_small"])), 51)
        assert expanded * 0.9 <= held.bytes - 1800 <= expanded * 1.1, (held.bytes - 1800, expanded)
        held.release()
        alone = Held(MemoryBudget(4 * MiB), "a")  # 50 × 20 KB expanded is past a share of 2 MiB: refused unread
        await alone.cover(1800)
        with pytest.raises(APIError) as refused:
            await asyncio.create_task(within(alone, lambda: stores.responses.find_items(named, tenant=DEFAULT_TENANT)))
        assert (refused.value.status, refused.value.code) == (400, "history_too_large")
        assert "51 items" in refused.value.message and "bytes expanded" in refused.value.message
        assert alone.bytes == 1800
        alone.release()
    assert budget.held == 0


class Request:
    """A request of ``holder``'s holding a tiny body's charge, and ``loaded`` bytes charged as it loads them, until it
    is ended."""

    def __init__(self, budget: MemoryBudget, holder: str, body: int, loaded: int = 0) -> None:
        self.outcome = "waiting"
        self.task = asyncio.create_task(self._run(budget, holder, body, loaded))

    async def _run(self, budget: MemoryBudget, holder: str, body: int, loaded: int) -> None:
        held = Held(budget, holder)
        await held.cover(30 * body)
        hold(held)
        charge(loaded, 8)
        self.outcome = "held"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            why = absorb_preemption()
            if why is None:
                raise
            self.outcome = f"ended:{why}"
        finally:
            held.release()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_backstop_ends_the_holder_charged_most_first_never_the_honest_request_within_its_share() -> None:
    """The issue's scene: the victim's 1 MB request is charged 30 MB, each of the attacker's twelve tiny requests
    5.6 MB for the history it loaded; each weighs less than the victim's, together far more. With the real memory
    following what is held, the backstop ends the attacker's, one a reading, until the reading is under the low
    watermark; the victim's and the bystander's run on."""
    budget = MemoryBudget(128 * MiB, 0.5)
    base = 100 * MiB
    watch = MemoryWatch(budget, source=lambda: base + budget.held, interval=0, trim=lambda: None)  # as charged
    watch.high, watch.low = base + 80 * MiB, base + 65 * MiB
    victim = Request(budget, "victim", 1_000_000)
    attackers = [Request(budget, "attacker", 120, loaded=700_000) for _ in range(12)]
    bystander = Request(budget, "bystander", 2_000)
    await settle()
    assert victim.outcome == "held" and all(request.outcome == "held" for request in attackers)
    assert budget.held_by("attacker") > budget.held_by("victim") > max(
        holding.bytes for holding in budget.pool.tenants["attacker"].holdings)
    assert [holder for holder, _, _ in victims(budget.pool)] == ["attacker"] * 12 + ["victim", "bystander"]
    ended = 0
    while watch.tick():  # past the high watermark: one request ended a reading, until under the low one
        await settle()
        ended += 1
        assert sum(request.outcome == "ended:request memory" for request in attackers) == ended
        assert victim.outcome == "held" and bystander.outcome == "held"
    assert ended == 6 and not budget.refusing
    assert budget.held_by("attacker") > budget.held_by("victim")  # ended down to under the low watermark only
    for request in (victim, bystander, *attackers):
        request.task.cancel()
    await asyncio.gather(*(request.task for request in (victim, bystander, *attackers)), return_exceptions=True)
    assert budget.held == 0


async def test_within_a_holder_its_largest_request_ends_first_the_newest_among_equals() -> None:
    budget = MemoryBudget(64 * MiB, 1.0)
    held: list[Reservation] = []

    async def holding(size: int) -> None:
        held.append(await budget.charge("a", size))
        await asyncio.Event().wait()

    tasks = [asyncio.create_task(holding(size)) for size in (MiB, 2 * MiB, 2 * MiB)]
    await settle()
    order = [holding for _, holding, _ in victims(budget.pool)]
    assert order == [held[2], held[1], held[0]]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for reservation in held:
        reservation.release()
