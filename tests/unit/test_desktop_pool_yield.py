"""An idle desktop yields to a session that needs one (services/agents/computer/desktops.py): while a call waits
because its holder (or the process) is at its bound, the least recently used desktop whose session has no turn
running and no call on it is stopped, its session told ``yielded`` on its next call; a desktop whose turn runs never
yields, beside it. With auth off, holders are told apart by the caller's key, as the memory share's are. The pool is
given desktops that start and stop at once (its ``maker``): the rule is the pool's (the real desktops, through the
Agents API: tests/integration/test_agents_desktop_pool.py)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client import REGISTRY

from responses_bridge.services.agents.computer.desktops import DesktopBounds, DesktopBusy, DesktopPool
from responses_bridge.services.tenancy.memory_budget import MemoryBudget
from tests.unit.test_desktop_pool_fairness import FakeMaker, _start, _until


def _yielded() -> float:
    return REGISTRY.get_sample_value("responses_bridge_desktops_yielded_total") or 0.0


def _pool(running: set[str], **bounds: float) -> tuple[DesktopPool, FakeMaker]:
    """A pool whose sessions in ``running`` have a turn running (the others' are idle between turns)."""
    maker = FakeMaker()
    pool = DesktopPool(None, DesktopBounds(**bounds), maker=maker)  # type: ignore[arg-type]
    pool.turn_running = running.__contains__
    return pool, maker


async def test_the_least_recently_used_idle_desktop_of_a_holder_at_its_cap_yields_to_its_new_session() -> None:
    running: set[str] = set()
    pool, maker = _pool(running, per_tenant=2, total=4, wait=30.0)
    yielded = _yielded()
    try:
        await _start(pool, "older", "t1")
        await _start(pool, "newer", "t1")
        async with pool.use("older", "t1", None) as (_, fresh):  # used again: "newer" is now the least recent
            assert not fresh
        await asyncio.wait_for(_start(pool, "third", "t1"), 5.0)
        assert pool.has("third") and pool.has("older") and not pool.has("newer")
        assert maker.made[1].stopped and not maker.made[0].stopped
        assert pool.stopped == {"newer": "yielded"} and pool.running("t1") == 2
        async with pool.use("newer", "t1", None) as (_, fresh):  # its next call: a fresh one, "older" yielding
            assert fresh
        assert pool.stopped == {"older": "yielded"} and pool.running("t1") == 2
        assert _yielded() - yielded == 2  # counted: how often idle sessions lose their desktops
    finally:
        await pool.close()


async def test_a_desktop_whose_turn_runs_never_yields_and_the_call_is_told_none_is_free() -> None:
    """The control: both of the holder's desktops have a turn running (between calls): the third session waits
    and is told none is free; the other holder's idle desktop does not yield either (it would not make room)."""
    running = {"busy_1", "busy_2"}
    pool, maker = _pool(running, per_tenant=2, total=4, wait=0.5)
    try:
        await _start(pool, "busy_1", "t1")
        await _start(pool, "busy_2", "t1")
        await _start(pool, "theirs", "t2")
        with pytest.raises(DesktopBusy, match="RESPONSES_BRIDGE_DESKTOPS_PER_TENANT"):
            await _start(pool, "third", "t1")
        assert not any(desktop.stopped for desktop in maker.made) and pool.stopped == {}
        assert pool.running() == 3
    finally:
        await pool.close()


async def test_a_desktop_whose_turn_ends_while_a_call_waits_yields_then() -> None:
    running = {"busy_1", "busy_2"}
    pool, _ = _pool(running, per_tenant=2, total=4, wait=30.0)
    try:
        await _start(pool, "busy_1", "t1")
        await _start(pool, "busy_2", "t1")
        waiting = asyncio.create_task(_start(pool, "third", "t1"))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        running.discard("busy_2")  # its turn ended: idle now
        await asyncio.wait_for(waiting, 5.0)
        assert pool.stopped == {"busy_2": "yielded"} and pool.has("busy_1") and pool.has("third")
    finally:
        await pool.close()


async def test_a_desktop_in_use_never_yields() -> None:
    """No turn known to run, but a call is on the desktop: it is not idle."""
    pool, _ = _pool(set(), per_tenant=1, total=4, wait=0.5)
    try:
        async with pool.use("acting", "t1", None):
            with pytest.raises(DesktopBusy):
                await _start(pool, "other", "t1")
            assert pool.has("acting") and pool.stopped == {}
    finally:
        await pool.close()


async def test_with_the_process_full_any_holders_least_recently_used_idle_desktop_yields() -> None:
    """Each holder within its cap, the process at its bound: the idle desktop used least lately yields, whoever
    holds it; a desktop whose turn runs is passed over."""
    running = {"a_busy"}
    pool, _ = _pool(running, per_tenant=2, total=3, wait=30.0)
    try:
        await _start(pool, "b_idle", "t2")
        await _start(pool, "a_busy", "t1")
        await _start(pool, "a_idle", "t1")
        await asyncio.wait_for(_start(pool, "c_new", "t3"), 5.0)
        assert pool.stopped == {"b_idle": "yielded"} and pool.running() == 3
        assert pool.has("a_busy") and pool.has("a_idle") and pool.has("c_new")
    finally:
        await pool.close()


async def test_a_waiter_cancelled_holds_nothing_and_stops_nothing_more() -> None:
    running = {"busy"}
    pool, maker = _pool(running, per_tenant=1, total=4, wait=30.0)
    try:
        await _start(pool, "busy", "t1")
        waiting = asyncio.create_task(_start(pool, "next", "t1"))
        await _until(lambda: pool.slots.pool.waiting == 1)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await _until(lambda: pool.slots.pool.waiting == 0)
        assert pool.running("t1") == 1 and not maker.made[0].stopped and not pool.has("next")
    finally:
        await pool.close()


def test_with_auth_off_callers_are_told_apart_by_their_key_as_the_memory_share_tells_them() -> None:
    pool = DesktopPool(None, by_client_key=True)
    budget = MemoryBudget(1 << 20, by_client_key=True)
    one, two = pool.holder("default", "Bearer sk-one"), pool.holder("default", "Bearer sk-two")
    assert one != two and one == pool.holder("default", "Bearer sk-one") and "sk-one" not in one
    assert one == budget.holder("default", "Bearer sk-one")
    assert pool.holder("default", None) == pool.holder("default", " ") == "default"  # no key: the tenant's
    assert DesktopPool(None).holder("alpha", "Bearer sk-one") == "alpha"  # with tenants: the tenant


async def test_with_auth_off_one_callers_desktops_do_not_count_in_anothers_bound() -> None:
    pool, _ = _pool({"one_1"}, per_tenant=1, total=4, wait=0.3)
    pool.by_client_key = True
    try:
        async with pool.use("one_1", "default", None, pool.holder("default", "Bearer sk-one")):
            pass
        with pytest.raises(DesktopBusy):  # the control: the same caller is at its bound (its turn runs)
            async with pool.use("one_2", "default", None, pool.holder("default", "Bearer sk-one")):
                pass
        async with pool.use("two_1", "default", None, pool.holder("default", "Bearer sk-two")) as (_, fresh):
            assert fresh  # another caller: a bound of its own
        assert pool.running(pool.holder("default", "Bearer sk-one")) == 1
        assert pool.running(pool.holder("default", "Bearer sk-two")) == 1
    finally:
        await pool.close()
