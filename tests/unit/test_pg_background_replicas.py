"""Two BackgroundServices ("replicas" A and B: each its own pool, stores, leases and owner id) on one real
PostgreSQL database, with a scripted upstream whose stream waits at a gate: a run on A is followed from B live
(no gap, no duplicate, ending with its terminal event), cancelled from B, and failed by B once A stops renewing
its lease (A, told at its next heartbeat, stops without storing anything more).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import orjson
import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.run.response_run import ResponseRun
from responses_bridge.services.background import BackgroundService
from responses_bridge.services.background_frames import INTERRUPTED_CODE
from responses_bridge.services.background_run import BackgroundRun
from responses_bridge.store.base import DEFAULT_TENANT
from responses_bridge.store.postgres import PostgresDatabase
from responses_bridge.store.postgres.background_runs import PostgresRunLeases
from responses_bridge.store.postgres.events import PostgresEventLog
from responses_bridge.store.postgres.responses import PostgresResponseStore
from tests.unit.test_background_runs import ScriptedUpstream


@dataclass
class Replica:
    db: PostgresDatabase
    store: PostgresResponseStore
    events: PostgresEventLog
    leases: PostgresRunLeases
    service: BackgroundService


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[tuple[Replica, Replica]]:
    async with AsyncExitStack() as stack:
        made = []
        for name in ("a", "b"):
            db = PostgresDatabase(postgres_url)
            store = PostgresResponseStore(db)
            await store.open()
            stack.push_async_callback(store.close)
            events = PostgresEventLog(db)
            leases = PostgresRunLeases(db, postgres_url, lease_seconds=30.0, owner=name)
            service = BackgroundService(store, events, ScriptedUpstream([]), leases)  # type: ignore[arg-type]
            await service.open()
            stack.push_async_callback(service.close)
            made.append(Replica(db, store, events, leases, service))
        yield made[0], made[1]


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
    assert frames[-1].startswith(b"event: response.cancelled\n")
    assert sum(frame.startswith(b"event: response.cancelled\n") for frame in frames) == 1
    again = await b.service.cancel(run.response_id, tenant=DEFAULT_TENANT)  # idempotent
    assert again["status"] == "cancelled"
    async with a.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM background_runs") == 0  # released


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
    async with a.db.acquire() as conn:  # A stopped renewing (a dead replica): its lease is in the past
        await conn.execute("UPDATE background_runs SET lease_until = now() - interval '1 second'")
    follower = asyncio.create_task(collect(b, run.response_id, -1))
    assert await b.leases.fail_abandoned(b.service._closer()) == [run.response_id]
    followed = await asyncio.wait_for(follower, timeout=30)
    assert followed[-1]["type"] == "response.failed"
    assert followed[-1]["response"]["error"]["code"] == INTERRUPTED_CODE
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
