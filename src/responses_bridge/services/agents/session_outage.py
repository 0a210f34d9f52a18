"""A session's turns through a database outage: store errors are transient until proven otherwise.

Every read and write of a session's runner, and of the input the session accepts, goes through a store that retries
a transient error (a connection lost or refused, SQLite's lock held: store/transient.py) with backoff, for up to
``RESPONSES_BRIDGE_STORE_RETRY_SECONDS``: a turn waits out a short outage where it is and goes on from there, and an
input event is acknowledged (202) only once its turn, with its messages, is stored — never held in memory only. An
input that could not be stored within the bound is refused with a 503 ``store_unavailable`` (not accepted: the
client sends it again).

An outage longer than the bound (or an error raised outside those calls, such as the turn's response failing to
start) does not fail the session either: the runner lets go of the turn's response in flight (as a drain does), and
forgets the events the store never took (no reader saw them), waits for the store, then reads the session's
unfinished turns back from it and runs them again, the running one from its last recorded step
(session_resume.py), with the credentials the process still holds. Such a recovery is not a resume after a crash:
``RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES`` does not count it.

On a shared database, once the store was seen away (a call failed, or the heartbeat could not renew the lease), the
runner checks before its next call that it still holds the session's lease, and held it all along: a lease not
renewed for a whole period may have been another process's meanwhile (taken over, its turns run, let go again), even
when nobody holds it now. Either way the lease is lost for good (:class:`~.leases.SessionLeaseLost`): this runner
stops without writing anything more, and the session goes on from what is stored, in the process that took it over
or, when none did, in whichever process's sweep takes it next (this one's among them: a resume like any other,
counted as one). An outage shorter than the lease is waited out in place. A fencing of the store's own (a write
refused because the lease moved on) raises the store's ``LeaseLost`` family, which is final in the same way.

What fails a session is only what cannot succeed by waiting (an error that is not transient), and its ``error``
says which (:func:`fail_session`). A runner whose lease was lost lets go here too (:func:`let_go`,
:func:`lost_meanwhile`), out of turns.py's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

import structlog

from ...store.base_agents import AgentStore
from ...store.records import LeaseLost
from ...store.transient import RetryingStore, is_transient
from .leases import SessionLeaseLost, SessionLeases
from .session_resume import stop_response, stored_turns
from .turn_queue import public

if TYPE_CHECKING:
    from .runner_view import TurnRunner

log = structlog.get_logger("responses_bridge.agents")

WAIT_SECONDS = 1.0  # between two looks at a store that is still away, once the calls' own retries gave up


def retrying_store(store: AgentStore, within: float,
                   still_ours: Callable[[], Awaitable[None]] | None = None) -> AgentStore:
    """``store`` with each call retried through an outage for ``within`` seconds (``still_ours`` checked before
    each retry: it raises when the session's lease moved on); ``store`` itself when ``within`` is 0."""
    if within <= 0:
        return store
    inner = store.inner if isinstance(store, RetryingStore) else store
    return cast(AgentStore, RetryingStore(inner, within=within, before_retry=still_ours))


def lease_check(store: AgentStore, session_id: str, leases: SessionLeases) -> Callable[[], Awaitable[None]]:
    """Before a retry on a shared database: the session's lease is still this process's, and was all along
    (renewed now), else :class:`SessionLeaseLost`. A lease not renewed for a whole period is lost even when nobody
    holds it now: another process may have taken the session over, run its turns and let it go meanwhile, and
    what this process holds in memory would overwrite that; the session is left to the sweeps, which resume it
    from the store (this process's own among them)."""
    inner = store.inner if isinstance(store, RetryingStore) else store
    mine = leases.claims.get(session_id)  # a later runner of the session here has a claim of its own
    lost = False

    async def still_ours() -> None:
        nonlocal lost
        last = leases.renewed.get(session_id)
        if lost or leases.claims.get(session_id) != mine or last is None or \
                time.monotonic() - last > leases.lease_seconds:
            lost = True  # for good: never found ours again once a new claim renewed it
            raise SessionLeaseLost(session_id)
        sent = time.monotonic()  # before the write: the renewed lease runs from no later than this
        if not await inner.claim_session(session_id, leases.owner, seconds=leases.lease_seconds):
            lost = True
            raise SessionLeaseLost(session_id)
        leases.renewed[session_id] = sent

    return still_ours


def failure_message(exc: BaseException) -> str:
    """What a session that failed says: the kind of error it could not go on from."""
    return f"The session failed inside the bridge: {type(exc).__name__} (not a transient store error)."


async def recover(runner: TurnRunner, exc: BaseException) -> None:
    """The store failed the runner's turn past its retries: let go of the turn in flight, wait for the store, and
    queue the session's unfinished turns again as the store holds them (the runner's ``_work`` then runs them).
    Raises :class:`SessionLeaseLost` when another process holds the session now."""
    log.warning("agent_session_store_unavailable", session_id=runner.session_id, error=repr(exc)[:300])
    held = [entry for entry in ([runner.current] if runner.current is not None else []) + runner.queue]
    authorization = {entry.turn["id"]: entry.authorization for entry in held}
    with contextlib.suppress(Exception):
        await stop_response(runner, runner.response_id)  # what its readers saw is stored; the rest is made again
    runner.current, runner.response_id = None, None
    dropped = await runner.events.drop_unsaved()
    while True:
        try:
            async with runner.locked():  # no input is being queued meanwhile: the store's turns are all of them
                session = await runner.session()
                entries, _ = await stored_turns(runner, session)
                for entry in entries:
                    entry.recovered = True
                    entry.authorization = authorization.get(entry.turn["id"])
                runner.queue = entries
            break
        except Exception as again:
            if not is_transient(again):
                raise
            log.warning("agent_session_store_still_unavailable", session_id=runner.session_id,
                        error=repr(again)[:300])
            await asyncio.sleep(WAIT_SECONDS)
    log.info("agent_session_recovered", session_id=runner.session_id, turns=len(runner.queue),
             running=sum(1 for entry in runner.queue if entry.resuming), dropped_events=dropped)


async def lost_meanwhile(runner: TurnRunner) -> bool:
    """On a shared database: True when another process holds the session's lease now."""
    if runner.still_ours is None:
        return False
    try:
        await runner.still_ours()
    except LeaseLost:
        return True
    except Exception:  # noqa: BLE001 - the store is away: what failed the session stands
        return False
    return False


async def let_go(runner: TurnRunner) -> None:
    """The session is another process's now, or lapsed: the runner stops here without writing anything more."""
    log.warning("agent_session_lease_lost", session_id=runner.session_id)
    with contextlib.suppress(Exception):
        await stop_response(runner, runner.response_id)
    runner.queue = []
    if runner.on_lost is not None:
        runner.on_lost(runner.session_id)


async def fail_session(runner: TurnRunner, exc: Exception) -> None:
    """Something the session cannot go on from (never the model's own failure: that fails a turn only, nor a
    transient store error: :func:`recover`): the running and queued turns fail with it, saying what."""
    message = failure_message(exc)
    try:
        ending = ([runner.current] if runner.current is not None else []) + runner.queue
        runner.queue = []
        for entry in ending:
            await runner._end(entry, "failed", {"code": "internal_error", "message": message}, None)
        async with runner._changing() as session:
            session["status"], session["error"] = "failed", message
            await runner.events.emit({"type": "error", "session_id": runner.session_id, "error": {
                "type": "server_error", "code": "server_error", "message": session["error"], "param": None}})
            await runner.events.emit({"type": "agent.session.failed", "session": public(session)},
                                     records=[runner.session_record(session)])
    except Exception:
        log.exception("agent_session_fail_not_stored", session_id=runner.session_id)
