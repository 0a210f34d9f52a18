"""Which process runs a session's turns when several share the database (``serve --workers``, replicas on
PostgreSQL): the one holding the session's lease in the store, taken with its input, renewed while its turns run,
given back when it is idle. Another process answers input for it with a 409 ``session_busy`` meanwhile; its event
numbers and turns are never two processes' at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from ...protocol.errors import APIError
from ...store.base_agents import AgentStore
from ...store.records import LeaseLost

log = structlog.get_logger("responses_bridge.agents")


class SessionLeaseLost(LeaseLost):
    """Another process holds the session's lease now (this one could not renew it, the database being away): final
    for this process, never retried (store/transient.py); the new owner goes on from what is stored."""


class SessionLeases:
    def __init__(self, store: AgentStore, owner: str, lease_seconds: float,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.on_lost = on_lost  # a session whose lease another process took: let go of here (its runner, its log)
        self._heartbeat: asyncio.Task[None] | None = None
        self._releasing: set[asyncio.Task[None]] = set()
        # when each session's lease was last taken or renewed here (monotonic): one not renewed for a whole lease
        # period may have been another process's meanwhile, even if nobody holds it now (session_outage.py)
        self.renewed: dict[str, float] = {}
        self.claims: dict[str, int] = {}  # each session's runner here, by the claim that made it (session_outage.py)
        self._claimed = 0

    async def claim(self, session_id: str, running: Mapping[str, Any]) -> None:
        """Take the session's lease (a 409 while another process holds it); ``running``: this process's runners
        by session, whose leases the heartbeat renews."""
        claimed_at = time.monotonic()  # before the write: the lease runs from no later than this
        if await self.store.claim_session(session_id, self.owner, seconds=self.lease_seconds):
            self.renewed[session_id] = claimed_at
            self._claimed += 1
            self.claims[session_id] = self._claimed
        else:
            raise APIError(409, "This session's turn runs in another process of this deployment; send its input "
                           "again once the session is idle, or to the same replica.", type="invalid_request_error",
                           param="session_id", code="session_busy")
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat(running), name="agent-sessions:heartbeat")

    def release_soon(self, session_id: str, locked: Callable[[str], contextlib.AbstractAsyncContextManager[Any]],
                     running: Mapping[str, Any]) -> None:
        task = asyncio.ensure_future(self._release(session_id, locked, running))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release(self, session_id: str, locked: Callable[[str], contextlib.AbstractAsyncContextManager[Any]],
                       running: Mapping[str, Any]) -> None:
        """Under the session's lock, as input takes the lease: a release never undoes a claim made after it."""
        try:
            async with locked(session_id):
                if session_id not in running:
                    self.renewed.pop(session_id, None)
                    await self.store.release_session(session_id, self.owner)
        except Exception:  # the lease expires
            log.warning("agent_session_release_failed", session_id=session_id, exc_info=True)

    async def _beat(self, running: Mapping[str, Any]) -> None:
        """Renew the leases of the sessions running here, several times a lease period; a lease found taken
        (this process stalled past it) stops the session's runner here — its events would collide with the new
        owner's — and lets it go (``on_lost``): a runner cancelled with turns still queued never went idle, so it
        stayed registered, and every beat after found the lease taken again and said so, for the process's life.
        A lease not renewed for a whole period (the database was away) is not taken again either: another process
        may have run the session meanwhile and let it go; its runner here is stopped the same way, and the sweeps
        resume the session from the store (session_outage.py)."""
        while True:  # looked at after the sleep: the first claim starts it before its runner is registered
            await asyncio.sleep(self.lease_seconds / 3)
            if not running:
                return
            now = time.monotonic()
            for session_id, runner in list(running.items()):
                last = self.renewed.get(session_id)
                if last is not None and now - last > self.lease_seconds:  # the database away a whole lease
                    log.warning("agent_session_lease_lapsed", session_id=session_id)
                    self._stop(session_id, runner, running)
            runners = list(running.items())
            if not runners:
                continue
            sent = time.monotonic()  # before the write: a renewed lease runs from no later than this
            try:  # one write for all; renewed only while held: once run out it is lost, as its fenced writes are
                held = await self.store.renew_sessions([session_id for session_id, _ in runners], self.owner,
                                                       seconds=self.lease_seconds)
            except Exception:  # the next beat retries; a lease outlives a few missed beats
                log.warning("agent_session_renew_failed", sessions=len(runners), exc_info=True)
                for _, runner in runners:
                    doubt = getattr(runner.store, "doubt", None)  # its next write checks the lease first
                    if doubt is not None:
                        doubt()
                continue
            for session_id, runner in runners:
                if session_id in held:
                    self.renewed[session_id] = sent
                else:
                    log.warning("agent_session_lease_lost", session_id=session_id)
                    self._stop(session_id, runner, running)

    def _stop(self, session_id: str, runner: Any, running: Mapping[str, Any]) -> None:
        self.renewed.pop(session_id, None)
        if runner.task is not None:
            runner.task.cancel()
        if self.on_lost is not None and running.get(session_id) is runner:
            self.on_lost(session_id)

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()


class SessionLock:
    """One change of a session at a time within this process (sessions.py ``SessionService._locked``), as the
    lease is across processes: the lock, and how many hold or wait for it (it lives only while someone does)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0
