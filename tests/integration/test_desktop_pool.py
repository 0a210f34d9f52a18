"""The sessions' desktops bounded and let go (services/agents/computer/desktops.py), on the real sandbox: one desktop
per session, at most ``per_tenant`` of a tenant's and ``total`` of all at once — a call past a bound waits for a
desktop (whose session's turn runs) to stop, and is told none is free when none does in time — and a desktop unused
for ``idle`` seconds stopped (its processes gone), the session's next call getting a fresh one."""

from __future__ import annotations

import asyncio
import os

import pytest

from responses_bridge.sandbox import Sandbox, SandboxLimits
from responses_bridge.services.agents.computer.desktops import DesktopBounds, DesktopBusy, DesktopPool
from tests.integration.test_desktop import CANNOT

pytestmark = [pytest.mark.store_free,
              pytest.mark.skipif(CANNOT is not None and not os.environ.get("CI"), reason=f"no desktop here: {CANNOT}")]


def _pool(**bounds: float) -> DesktopPool:
    """A pool whose sessions all have a turn running: none of its desktops is idle, so none yields to another
    session (the yield of idle ones, through the Agents API: tests/integration/test_agents_desktop_pool.py)."""
    pool = DesktopPool(Sandbox.detect(SandboxLimits(timeout=30.0)), DesktopBounds(**bounds))  # type: ignore[arg-type]
    pool.turn_running = lambda session_id: True
    refused = pool.unavailable()
    if refused is not None and not os.environ.get("CI"):
        pytest.skip(refused)
    return pool


async def test_desktops_past_the_bounds_wait_then_are_refused() -> None:
    pool = _pool(per_tenant=1, total=2, wait=0.3)
    try:
        async with pool.use("sess_a", "t1", None) as (first, fresh):
            assert fresh and first.processes()
        with pytest.raises(DesktopBusy, match="RESPONSES_BRIDGE_DESKTOPS_PER_TENANT"):  # t1 has its one
            async with pool.use("sess_b", "t1", None):
                pass
        async with pool.use("sess_c", "t2", None) as (_, fresh):  # another tenant's: within the total
            assert fresh
        with pytest.raises(DesktopBusy, match="RESPONSES_BRIDGE_DESKTOPS_MAX"):
            async with pool.use("sess_d", "t3", None):
                pass
        async with pool.use("sess_a", "t1", None) as (again, fresh):  # the session's own: the same desktop
            assert again is first and not fresh
        assert pool.running() == 2

        pool.bounds = DesktopBounds(per_tenant=1, total=2, wait=30.0)
        waiting = asyncio.ensure_future(_start(pool, "sess_b", "t1"))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # it waits for room, not refused yet
        pids = first.processes()
        await pool.stop("sess_a")  # the session ended: its room goes to the one waiting
        assert await asyncio.wait_for(waiting, 30.0)
        assert [pid for pid in pids if os.path.exists(f"/proc/{pid}")] == []
        assert pool.running("t1") == 1 and pool.has("sess_b")
    finally:
        await pool.close()
    assert pool.running() == 0


async def _start(pool: DesktopPool, session_id: str, tenant: str) -> bool:
    async with pool.use(session_id, tenant, None) as (_, fresh):
        return fresh


async def test_an_idle_desktop_is_stopped_and_the_next_call_gets_a_fresh_one() -> None:
    pool = _pool(idle=0.5)
    try:
        async with pool.use("sess_a", "t1", None) as (first, fresh):
            assert fresh
            await asyncio.sleep(1.0)  # in use: never stopped for idleness, however long a call takes
            assert pool.has("sess_a")
        pids = first.processes()
        for _ in range(300):  # stopped: its room given back once its processes are gone
            if pool.running() == 0:
                break
            await asyncio.sleep(0.05)
        assert not pool.has("sess_a") and pool.running() == 0 and pool.stopped == {"sess_a": "idle"}
        assert [pid for pid in pids if os.path.exists(f"/proc/{pid}")] == []
        async with pool.use("sess_a", "t1", None) as (second, fresh):
            assert fresh and second is not first and pool.stopped == {}  # what the model was told is known
            shot = await second.screenshot()
            assert shot.jpeg.startswith(b"\xff\xd8")
    finally:
        await pool.close()
