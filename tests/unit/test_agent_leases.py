"""A session's lease found taken by another process (this one stalled past it): the runner here is stopped and let
go once — not kept registered, its heartbeat saying the lease was lost at every beat for the process's life."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from responses_bridge.services.agents.leases import SessionLeases

LEASE = 3.0
"""Seconds: the heartbeat beats every second. Its beats come in timer order, so the tests see them whatever the
machine's speed; the lease is long only so that a loaded run's stalled loop (it stalled past a 60 ms lease) does not
also find the lease lapsed, which stops the runner by another path."""


class TakenStore:
    """A store whose lease another process holds from the second claim on (the first is this process's own)."""

    def __init__(self) -> None:
        self.claims = 0

    async def claim_session(self, session_id: str, owner: str, *, seconds: float) -> bool:
        self.claims += 1
        return self.claims == 1

    async def renew_sessions(self, session_ids: list[str], owner: str, *, seconds: float) -> set[str]:
        return {session_id for session_id in session_ids
                if await self.claim_session(session_id, owner, seconds=seconds)}


@dataclass
class Runner:
    task: asyncio.Task[None] | None


async def test_a_lost_lease_stops_the_runner_and_lets_it_go_once() -> None:
    store = TakenStore()
    running: dict[str, Any] = {}
    lost: list[str] = []

    def let_go(session_id: str) -> None:
        lost.append(session_id)
        running.pop(session_id, None)

    leases = SessionLeases(store, "this-process", LEASE, on_lost=let_go)  # type: ignore[arg-type]
    await leases.claim("sess_1", running)
    runner = Runner(asyncio.create_task(asyncio.sleep(60)))
    running["sess_1"] = runner
    assert leases._heartbeat is not None
    await asyncio.wait_for(leases._heartbeat, 10)  # it ends: nothing runs here any more
    assert lost == ["sess_1"] and running == {}
    assert runner.task is not None and runner.task.cancelled()
    assert store.claims == 2  # one claim, one beat that found the lease taken; no beat after


async def test_a_runner_claimed_again_meanwhile_is_not_let_go() -> None:
    """The beat found the lease taken for the runner it looked at; a runner registered since is not that one."""
    store = TakenStore()
    running: dict[str, Any] = {}
    lost: list[str] = []
    leases = SessionLeases(store, "this-process", LEASE, on_lost=lost.append)  # type: ignore[arg-type]
    await leases.claim("sess_1", running)
    old = Runner(asyncio.create_task(asyncio.sleep(60)))
    running["sess_1"] = old
    newer = Runner(None)
    real_claim = store.claim_session

    async def claim_then_replaced(session_id: str, owner: str, *, seconds: float) -> bool:
        if running.get(session_id) is newer:
            return True  # the claim that registered it took the lease back: this process's again
        held = await real_claim(session_id, owner, seconds=seconds)
        running[session_id] = newer  # registered (its claim held) while the beat's claim was on its way
        return held

    store.claim_session = claim_then_replaced  # type: ignore[method-assign]
    await asyncio.sleep(LEASE / 3 * 1.5)  # past the first beat (its timer is due first), before the second
    leases.close()
    assert lost == [] and running["sess_1"] is newer
    assert old.task is not None and old.task.cancelled()
