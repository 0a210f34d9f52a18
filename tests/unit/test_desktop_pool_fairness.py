"""The sessions' desktops as one more pool of the fair-share rule (services/agents/computer/desktops.py,
fairness/share.py): a desktop holds a unit from its start until it stops; with every unit held, a freed one goes to the
waiting tenant served least (desktop-seconds, decayed), first come first served within a tenant; the per-tenant
bound stays a hard cap; the queue is bounded; a call gives up at its wait. The pool is given desktops that start
and stop at once (its ``maker``): the rule is the pool's, not the browser's (tests/integration/test_desktop_pool.py
drives real ones)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import cast

import pytest
from prometheus_client import REGISTRY

from responses_bridge.sandbox.desktop import Desktop
from responses_bridge.sandbox.egress.policy import NetworkPolicy
from responses_bridge.services.agents.computer.desktops import DesktopBounds, DesktopBusy, DesktopPool


class FakeDesktop:
    """Starts and stops at once (or once ``gate`` is set); says whether it was stopped."""

    def __init__(self, gate: asyncio.Event | None) -> None:
        self.gate = gate
        self.started = False
        self.stopped = False
        self.browser_sandbox = True

    async def start(self) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.started = True

    async def stop(self) -> None:
        self.stopped = True


class FakeMaker:
    """The pool's desktops: fakes, each remembered; ``gate``: what their start waits for (None: nothing)."""

    def __init__(self) -> None:
        self.made: list[FakeDesktop] = []
        self.gate: asyncio.Event | None = None

    def unavailable(self) -> str | None:
        return None

    def make(self, tenant: str, network: NetworkPolicy | None, origins: Sequence[str]) -> Desktop:
        desktop = FakeDesktop(self.gate)
        self.made.append(desktop)
        return cast(Desktop, desktop)


def _pool(**bounds: float) -> tuple[DesktopPool, FakeMaker]:
    """A pool whose every session has a turn running: no desktop is idle, so none yields (the queue's rule among
    busy desktops; the idle ones' yield: tests/unit/test_desktop_pool_yield.py)."""
    maker = FakeMaker()
    pool = DesktopPool(None, DesktopBounds(**bounds), maker=maker)  # type: ignore[arg-type]
    pool.turn_running = lambda session_id: True
    return pool, maker


async def _start(pool: DesktopPool, session_id: str, tenant: str) -> None:
    async with pool.use(session_id, tenant, None):
        pass


class Order:
    """Calls waiting for their sessions' desktops, and the order they got them in."""

    def __init__(self, pool: DesktopPool) -> None:
        self.pool = pool
        self.got: list[str] = []
        self.calls: dict[str, asyncio.Task[None]] = {}

    async def wait(self, session_id: str, tenant: str, evicts: str | None = None) -> None:
        """``session_id``'s first call, once it is queued (the pool's waiters counted; ``evicts``: once that call
        was refused in its place)."""
        queued = self.pool.slots.pool.waiting
        self.calls[session_id] = asyncio.create_task(self._call(session_id, tenant))
        await _until(lambda: self.calls[evicts].done() if evicts is not None
                     else self.pool.slots.pool.waiting == queued + 1 or self.calls[session_id].done())

    async def _call(self, session_id: str, tenant: str) -> None:
        await _start(self.pool, session_id, tenant)
        self.got.append(session_id)

    async def next_after(self, stopped: str) -> str:
        """Stop ``stopped``'s desktop: the session whose call got the freed unit."""
        had = len(self.got)
        await self.pool.stop(stopped)
        await _until(lambda: len(self.got) > had)
        return self.got[-1]

    async def close(self) -> None:
        for call in self.calls.values():
            call.cancel()
        for call in self.calls.values():
            with contextlib.suppress(asyncio.CancelledError, DesktopBusy):
                await call


async def _until(done: Callable[[], bool]) -> None:
    for _ in range(2000):  # bounded: ten seconds and more at most
        if done():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not reached")


@contextlib.asynccontextmanager
async def _order(pool: DesktopPool) -> AsyncIterator[Order]:
    order = Order(pool)
    try:
        yield order
    finally:
        await order.close()
        await pool.close()


def _gauge(state: str) -> float:
    return REGISTRY.get_sample_value(f"responses_bridge_desktops_{state}") or 0.0


async def test_a_tenant_that_held_desktops_longest_waits_behind_one_that_held_them_less() -> None:
    """Both units held, one by each tenant; the one holding longer asks first, the other after: the unit freed goes
    to the tenant served less (a plain queue would give it to the first asker)."""
    pool, _ = _pool(total=2, per_tenant=2, wait=30.0)
    async with _order(pool) as order:
        await _start(pool, "long_1", "long")
        await asyncio.sleep(0.05)  # any time at all: "long" has held its desktop longer than "short" has
        await _start(pool, "short_1", "short")
        await order.wait("long_2", "long")
        await order.wait("short_2", "short")
        assert await order.next_after("long_1") == "short_2"
        assert await order.next_after("short_1") == "long_2"


async def test_a_tenants_calls_get_desktops_first_come_first_served_behind_a_fresh_tenant() -> None:
    pool, _ = _pool(total=2, per_tenant=2, wait=30.0)
    async with _order(pool) as order:
        await _start(pool, "busy_1", "busy")
        await _start(pool, "busy_2", "busy")
        await order.wait("busy_3", "busy")
        await order.wait("busy_4", "busy")
        await order.wait("fresh_1", "fresh")
        assert [await order.next_after("busy_1"), await order.next_after("busy_2"),
                await order.next_after("busy_3")] == ["fresh_1", "busy_3", "busy_4"]
        assert pool.running("busy") == 1 and pool.running("fresh") == 1


async def test_the_per_tenant_bound_is_a_cap_on_top_of_the_fair_queue_and_the_pool_is_gauged() -> None:
    """A tenant at its cap waits even while a unit is free, for one of its own to stop — a unit another tenant's
    desktop gives back goes to that tenant's waiter only once its own stops — and the gauges count the units held
    and the calls waiting."""
    live, waiting = _gauge("live"), _gauge("waiting")
    pool, _ = _pool(total=3, per_tenant=1, wait=30.0)
    async with _order(pool) as order:
        await _start(pool, "capped_1", "capped")
        await order.wait("capped_2", "capped")
        await _start(pool, "other_1", "other")  # a unit free: another tenant's call is not held behind the capped
        assert not order.calls["capped_2"].done() and pool.running() == 2
        assert (_gauge("live") - live, _gauge("waiting") - waiting) == (2, 1)
        await pool.stop("other_1")
        await asyncio.sleep(0.05)
        assert not order.calls["capped_2"].done() and pool.running("capped") == 1
        assert await order.next_after("capped_1") == "capped_2"
        assert (_gauge("live") - live, _gauge("waiting") - waiting) == (1, 0)
        with pytest.raises(DesktopBusy, match="RESPONSES_BRIDGE_DESKTOPS_PER_TENANT"):
            pool.bounds = DesktopBounds(total=3, per_tenant=1, wait=0.05)
            await _start(pool, "capped_3", "capped")
    assert (_gauge("live"), _gauge("waiting")) == (live, waiting)


async def test_the_queue_is_bounded_and_a_full_one_refuses_the_newest_call_of_the_tenant_asking_most() -> None:
    """One unit, four places in the queue (as every unit pool's: four a unit): the greedy tenant's four waiting
    calls fill it; another tenant's call takes the place of the greedy's newest, which is told the queue is full;
    the greedy's next call is refused at once."""
    pool, _ = _pool(total=1, per_tenant=8, wait=30.0)
    async with _order(pool) as order:
        await _start(pool, "greedy_0", "greedy")
        for at in range(1, 5):
            await order.wait(f"greedy_{at}", "greedy")
        await order.wait("modest_1", "modest", evicts="greedy_4")
        assert not order.calls["modest_1"].done()
        with pytest.raises(DesktopBusy, match="queue of calls waiting for one is full"):
            await order.calls["greedy_4"]
        with pytest.raises(DesktopBusy, match="queue of calls waiting for one is full"):
            await _start(pool, "greedy_5", "greedy")
        assert await order.next_after("greedy_0") == "modest_1"
        assert not pool.has("greedy_4") and not pool.has("greedy_5")


async def test_a_call_gives_up_at_its_wait_and_leaves_the_queue() -> None:
    """Past its wait a call is told none is free, and holds nothing: its place in the queue and its gauge gone, the
    next desktop to stop goes to the next call."""
    waiting = _gauge("waiting")
    pool, _ = _pool(total=1, per_tenant=1, wait=2.0)
    async with _order(pool) as order:
        await _start(pool, "first", "t1")
        await order.wait("gave_up", "t2")
        assert _gauge("waiting") - waiting == 1  # while it waits (a bounded wait: it has not given up yet)
        with pytest.raises(DesktopBusy, match="RESPONSES_BRIDGE_DESKTOPS_MAX"):
            await order.calls["gave_up"]
        assert pool.slots.pool.waiting == 0 and _gauge("waiting") == waiting
        pool.bounds = DesktopBounds(total=1, per_tenant=1, wait=30.0)
        await order.wait("later", "t3")
        assert await order.next_after("first") == "later"
        assert not pool.has("gave_up") and pool.running() == 1


async def test_a_desktop_stopped_while_it_starts_is_stopped_and_its_unit_given_back() -> None:
    """The session ends while its desktop starts: the desktop is stopped once started (no browser left running
    outside the bounds), the call told why, and its unit goes to the next call."""
    pool, maker = _pool(total=1, per_tenant=1, wait=30.0)
    maker.gate = asyncio.Event()
    async with _order(pool) as order:
        starting = asyncio.create_task(_start(pool, "ending", "t1"))
        await _until(lambda: bool(maker.made))
        await pool.stop("ending")
        maker.gate.set()
        with pytest.raises(Exception, match="stopped while it started"):
            await starting
        assert maker.made[0].stopped and pool.running() == 0
        await order.wait("next", "t2")
        await _until(lambda: order.got == ["next"])
