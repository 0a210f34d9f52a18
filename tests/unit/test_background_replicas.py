"""Two BackgroundServices ("replicas" A and B, or two workers: each its own connections, stores, leases and owner
id) on one database — one SQLite file (``serve --workers``) or one PostgreSQL database (replicas) — with a scripted
upstream whose stream waits at a gate: a run on A is followed from B live (no gap, no duplicate, ending with its
terminal event), cancelled from B, and failed by B once A stops renewing its lease (A, told at its next heartbeat,
stops without storing anything more; or, had it stalled past its lease and then resumed before any heartbeat, finds
every save fenced off).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.run.response_run import ResponseRun
from responses_bridge.services.responses.background import BackgroundService
from responses_bridge.services.responses.background_frames import INTERRUPTED_CODE
from responses_bridge.services.responses.background_run import BackgroundRun
from responses_bridge.store.base import DEFAULT_TENANT, EventLog, ResponseStore, RunLeases
from responses_bridge.store.sqlite.background_runs import SQLiteRunLeases
from responses_bridge.store.sqlite.events import SQLiteEventLog
from responses_bridge.store.sqlite.responses import SQLiteResponseStore
from tests.support.sdk_strict import failure_reason
from tests.unit.store_kinds import KINDS, postgres_database_url
from tests.unit.test_background_runs import ScriptedUpstream


@dataclass
class Replica:
    store: ResponseStore
    events: EventLog
    leases: RunLeases
    service: BackgroundService
    sql: Callable[[str], Awaitable[Any]]  # one statement on the database, its first value (or None)


@pytest.fixture(params=KINDS)
async def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Replica, Replica]]:
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(postgres_database_url(request)) if request.param == "postgres" else None
        made = []
        for name in ("a", "b"):
            if url is not None:
                made.append(await stack.enter_async_context(_postgres_replica(url, name)))
            else:
                made.append(await stack.enter_async_context(_sqlite_worker(tmp_path / "bridge.db", name)))
        yield made[0], made[1]


@asynccontextmanager
async def _postgres_replica(url: str, name: str) -> AsyncIterator[Replica]:
    from responses_bridge.store.postgres import PostgresDatabase
    from responses_bridge.store.postgres.background_runs import PostgresRunLeases
    from responses_bridge.store.postgres.events import PostgresEventLog
    from responses_bridge.store.postgres.responses import PostgresResponseStore

    db = PostgresDatabase(url)
    store = PostgresResponseStore(db)
    await store.open()

    async def sql(statement: str) -> Any:
        async with db.acquire() as conn:
            return await conn.fetchval(statement)

    leases = PostgresRunLeases(db, url, lease_seconds=30.0, owner=name)
    try:
        yield await _replica(store, PostgresEventLog(db), leases, sql)
    finally:
        await store.close()


@asynccontextmanager
async def _sqlite_worker(path: Path, name: str) -> AsyncIterator[Replica]:
    store = SQLiteResponseStore(str(path))
    await store.open()

    async def sql(statement: str) -> Any:
        async with store.writing() as conn:
            rows = list(await conn.execute_fetchall(statement))
        return rows[0][0] if rows else None

    leases = SQLiteRunLeases(store, lease_seconds=30.0, owner=name, poll_seconds=0.02)
    try:
        yield await _replica(store, SQLiteEventLog(store), leases, sql)
    finally:
        await store.close()


async def _replica(store: ResponseStore, events: EventLog, leases: RunLeases,
                   sql: Callable[[str], Awaitable[Any]]) -> Replica:
    service = BackgroundService(store, events, ScriptedUpstream([]), leases)  # type: ignore[arg-type]
    await service.open()
    return Replica(store, events, leases, service, sql)


@pytest.fixture(autouse=True)
async def _closed(replicas: tuple[Replica, Replica]) -> AsyncIterator[None]:
    yield
    for replica in replicas:
        await replica.service.close()


async def start(replica: Replica, upstream: ScriptedUpstream, text: str = "hi") -> BackgroundRun:
    exchange = ResponseRun(replica.store, EngineOptions(), tenant=DEFAULT_TENANT)
    call = await exchange.begin(orjson.dumps({"model": "m", "input": text, "background": True}))
    return await replica.service.start(exchange, call, None, upstream)  # type: ignore[arg-type]


def events_of(data: bytes) -> list[dict]:
    return [orjson.loads(frame.split(b"\ndata: ", 1)[1]) for frame in data.split(b"\n\n") if frame]


async def collect(replica: Replica, response_id: str, after: int) -> list[dict]:
    out: list[dict] = []
    async for frames in replica.service.events_after(response_id, after, tenant=DEFAULT_TENANT):
        out.extend(events_of(frames))
    return out


async def test_a_run_on_a_is_followed_live_from_b(replicas) -> None:
    a, b = replicas
    gate = asyncio.Event()
    upstream = ScriptedUpstream(["one ", "two ", "three ", "four"], gate)
    run = await start(a, upstream)
    await upstream.at_gate.wait()
    await run._flush()  # created, queued, in_progress… are stored: B joins after the first two
    follower = asyncio.create_task(collect(b, run.response_id, 1))
    gate.set()
    followed = await asyncio.wait_for(follower, timeout=30)
    assert [event["sequence_number"] for event in followed] == list(range(2, 2 + len(followed)))
    assert followed[-1]["type"] == "response.completed"
    assert sum(event["type"] == "response.completed" for event in followed) == 1
    assert followed[-1]["response"]["output"][0]["content"][0]["text"] == "one two three four"
    stored = await a.events.after(run.response_id, -1, tenant=DEFAULT_TENANT)
    assert [orjson.loads(frame.split(b"\ndata: ", 1)[1]) for _, frame in stored][2:] == followed
    assert await collect(b, run.response_id, -1) == events_of(b"".join(frame for _, frame in stored))
    # another tenant's follower sees nothing of it
    assert [e async for e in b.service.events_after(run.response_id, -1, tenant="someone-else")] == []


async def test_cancel_on_b_stops_the_run_on_a(replicas) -> None:
    a, b = replicas
    upstream = ScriptedUpstream(["never ", "sent"], asyncio.Event())  # waits at the gate for ever
    run = await start(a, upstream)
    await upstream.at_gate.wait()
    answered = await asyncio.wait_for(b.service.cancel(run.response_id, tenant=DEFAULT_TENANT), timeout=30)
    assert answered["status"] == "cancelled" and answered["id"] == run.response_id
    assert run.task is not None
    await asyncio.wait_for(asyncio.shield(run.task), timeout=30)  # A's own run ended: it was A that stopped it
    assert run.response_run.response["status"] == "cancelled"
    stored = await a.store.get_response(run.response_id, tenant=DEFAULT_TENANT)
    assert stored is not None and stored["status"] == "cancelled"
    frames = [frame for _, frame in await b.events.after(run.response_id, -1, tenant=DEFAULT_TENANT)]
    assert frames[-1].startswith(b"event: response.failed\n") and b'"status":"cancelled"' in frames[-1]
    assert sum(frame.startswith(b"event: response.failed\n") for frame in frames) == 1
    again = await b.service.cancel(run.response_id, tenant=DEFAULT_TENANT)  # idempotent
    assert again["status"] == "cancelled"
    assert await a.sql("SELECT count(*) FROM background_runs") == 0  # released


async def test_cancel_from_another_tenant_is_not_found(replicas) -> None:
    from responses_bridge.protocol.errors import APIError

    a, b = replicas
    gate = asyncio.Event()
    upstream = ScriptedUpstream(["x"], gate)
    run = await start(a, upstream)
    await upstream.at_gate.wait()
    with pytest.raises(APIError) as info:
        await b.service.cancel(run.response_id, tenant="someone-else")
    assert info.value.status == 404
    gate.set()
    assert run.task is not None
    await asyncio.wait_for(asyncio.shield(run.task), timeout=30)
    assert run.response_run.response["status"] == "completed"


async def test_a_run_whose_lease_ran_out_is_failed_once_by_b(replicas) -> None:
    a, b = replicas
    upstream = ScriptedUpstream(["stuck"], asyncio.Event())
    run = await start(a, upstream)
    await upstream.at_gate.wait()
    await run._flush()
    assert await b.leases.fail_abandoned(b.service._closer()) == []  # A's lease is live
    await expire_leases(a)  # A stopped renewing (a dead replica): its lease is in the past
    follower = asyncio.create_task(collect(b, run.response_id, -1))
    assert await b.leases.fail_abandoned(b.service._closer()) == [run.response_id]
    followed = await asyncio.wait_for(follower, timeout=30)
    assert followed[-1]["type"] == "response.failed"
    assert failure_reason(followed[-1]["response"]["error"]) == INTERRUPTED_CODE
    assert [event["sequence_number"] for event in followed] == list(range(len(followed)))
    # A's heartbeat learns the run is no longer its own and stops it without storing anything
    renewal = await a.leases.renew(list(a.service.runs))
    assert renewal.lost == {run.response_id}
    a.service._stop_soon(run.response_id, "lost")
    assert run.task is not None
    await asyncio.wait_for(asyncio.shield(run.task), timeout=30)
    stored = await a.store.get_response(run.response_id, tenant=DEFAULT_TENANT)
    assert stored is not None and stored["status"] == "failed"
    frames = [frame for _, frame in await a.events.after(run.response_id, -1, tenant=DEFAULT_TENANT)]
    assert sum(frame.startswith(b"event: response.failed\n") for frame in frames) == 1


async def expire_leases(replica: Replica) -> None:
    kind_of_past = "now() - interval '1 second'" if "Postgres" in type(replica.leases).__name__ else "0"
    await replica.sql(f"UPDATE background_runs SET lease_until = {kind_of_past}")


async def test_a_run_that_resumes_after_its_lease_was_taken_stores_nothing(replicas) -> None:
    """A stalls past its lease (no heartbeat runs: a stopped process), B fails the run, then A's run goes on and
    ends before any heartbeat tells it: every save it tries is fenced off, B's end stands."""
    a, b = replicas
    gate = asyncio.Event()
    upstream = ScriptedUpstream(["late ", "answer"], gate)
    run = await start(a, upstream)
    await upstream.at_gate.wait()
    await run._flush()
    await expire_leases(a)
    assert await b.leases.fail_abandoned(b.service._closer()) == [run.response_id]
    gate.set()  # A resumes: the upstream answers, the run completes and tries to store its events and its end
    assert run.task is not None
    await asyncio.wait_for(asyncio.shield(run.task), timeout=30)
    stored = await b.store.get_response(run.response_id, tenant=DEFAULT_TENANT)
    assert stored is not None and stored["status"] == "failed"
    assert failure_reason(stored["error"]) == INTERRUPTED_CODE
    frames = [frame for _, frame in await b.events.after(run.response_id, -1, tenant=DEFAULT_TENANT)]
    assert frames[-1].startswith(b"event: response.failed\n")
    assert not any(frame.startswith(b"event: response.completed\n") for frame in frames)
    assert not any(b"answer" in frame for frame in frames)  # not one of A's late deltas either


async def test_a_start_whose_lease_ran_out_before_its_row_was_stored_claims_it_again(replicas) -> None:
    """A stalled between claiming a new run's lease and storing its queued row, past the lease (a loaded host, a
    short lease): that save is fenced off and writes nothing, and no other replica can have acted on a run with no
    row, so A claims it again and the run goes on — the client is answered the queued response, not a 500
    (``test_kill_9_during_200_concurrent_responses`` met it on PostgreSQL under a full run's load). A lease that
    runs out at every claim ends in a 503 the client retries, nothing stored, nothing left claimed. (SQLite's
    workers fence by owner alone, a sweep taking a lease under the same write lock as the saves: a lease run out
    and not taken fences nothing there, and the start goes on at its first claim.)"""
    from responses_bridge.protocol.errors import APIError
    from responses_bridge.services.responses.background import QUEUED_CLAIMS

    a, _ = replicas
    fenced_by_clock = "Postgres" in type(a.leases).__name__
    claim = a.leases.claim
    claims: list[str] = []
    ran_out = 1  # the first claim runs out before the save

    async def claim_then_stall(response_id: str) -> None:
        claims.append(response_id)
        await claim(response_id)
        if len(claims) <= ran_out:
            await expire_leases(a)

    a.leases.claim = claim_then_stall  # type: ignore[method-assign]
    gate = asyncio.Event()
    upstream = ScriptedUpstream(["on ", "time"], gate)
    run = await start(a, upstream)
    assert claims == [run.response_id] * (2 if fenced_by_clock else 1)
    gate.set()
    assert run.task is not None
    await asyncio.wait_for(asyncio.shield(run.task), timeout=30)
    stored = await a.store.get_response(run.response_id, tenant=DEFAULT_TENANT)
    assert stored is not None and stored["status"] == "completed"
    if not fenced_by_clock:
        return
    ran_out = 1000  # every claim runs out
    claims.clear()
    with pytest.raises(APIError) as refused:
        await start(a, ScriptedUpstream(["never"], asyncio.Event()))
    assert refused.value.status == 503 and refused.value.code == "server_overloaded"
    assert len(claims) == QUEUED_CLAIMS and len(set(claims)) == 1
    assert await a.store.get_response(claims[0], tenant=DEFAULT_TENANT) is None
    assert claims[0] not in a.service.runs
    assert await a.sql("SELECT count(*) FROM background_runs") == 0


class _CutThenBack:
    """B's event log whose first reads fail as a cut connection does (the database away for a moment)."""

    def __init__(self, inner: EventLog, failures: int) -> None:
        self.inner, self.failures = inner, failures

    async def after(self, response_id: str, after: int, *, tenant: str) -> list[tuple[int, bytes]]:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionResetError(104, "Connection reset by peer")
        return await self.inner.after(response_id, after, tenant=tenant)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_follower_waits_out_its_databases_outage_and_sees_the_run_to_its_end(replicas) -> None:
    """A reader following a run that goes on elsewhere (often the request that started it, on the replica that lost
    the run's lease in that very outage): its reads wait the outage out as a run's saves do, and it is shown the
    run to its terminal event. Before, the first failed read ended its stream with no terminal event."""
    a, b = replicas
    gate = asyncio.Event()
    upstream = ScriptedUpstream(["one ", "two"], gate)
    run = await start(a, upstream)
    await upstream.at_gate.wait()
    await run._flush()
    b.service.events = _CutThenBack(b.events, failures=3)  # type: ignore[assignment]
    b.service.store_retry = 30.0
    follower = asyncio.create_task(collect(b, run.response_id, -1))
    gate.set()
    followed = await asyncio.wait_for(follower, timeout=30)
    assert [event["sequence_number"] for event in followed] == list(range(len(followed)))
    assert followed[-1]["type"] == "response.completed"
