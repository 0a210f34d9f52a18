"""PostgresRunLeases on a real PostgreSQL server: two "replicas" (two pools, two owners) on one database.

Leases decide who may end a run: a live lease is never swept, an expired one (or none) is ended by exactly one
sweeper with its terminal event written once; cancel requests and appended events reach the other replica through
LISTEN/NOTIFY. Expiry is made by moving ``lease_until`` into the past, not by waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from responses_bridge.services.responses.background_frames import INTERRUPTED_CODE, cancelled, interrupted
from responses_bridge.store.postgres.background_runs import PostgresRunLeases
from responses_bridge.store.postgres.database import PostgresDatabase
from responses_bridge.store.postgres.events import PostgresEventLog
from responses_bridge.store.records import LeaseLost
from tests.support.sdk_strict import failure_reason


@pytest.fixture
async def databases(postgres_url: str) -> AsyncIterator[tuple[PostgresDatabase, PostgresDatabase]]:
    async with PostgresDatabase(postgres_url) as first, PostgresDatabase(postgres_url) as second:
        yield first, second


def leases(database: PostgresDatabase, url: str, owner: str) -> PostgresRunLeases:
    return PostgresRunLeases(database, url, lease_seconds=30.0, owner=owner)


async def add_run(db: PostgresDatabase, response_id: str, status: str = "in_progress", events: int = 3) -> None:
    response = {"id": response_id, "object": "response", "status": status, "background": True,
                "output": [{"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant",
                            "content": []}]}
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO responses (id, created_at, status, model, response) "
                           "VALUES ($1, 0, $2, 'm', $3)", response_id, status, orjson.dumps(response))
        for sequence in range(events):
            await conn.execute("INSERT INTO response_events VALUES ($1, $2, $3)", response_id, sequence,
                               f"event: response.output_text.delta\ndata: {{\"sequence_number\": {sequence}}}\n\n"
                               .encode())


async def expire(db: PostgresDatabase, response_id: str) -> None:
    async with db.acquire() as conn:
        await conn.execute("UPDATE background_runs SET lease_until = now() - interval '1 second' "
                           "WHERE response_id = $1", response_id)


async def stored(db: PostgresDatabase, response_id: str) -> tuple[dict, list[bytes]]:
    async with db.acquire() as conn:
        blob = await conn.fetchval("SELECT response FROM responses WHERE id = $1", response_id)
        rows = await conn.fetch("SELECT sequence_number, event FROM response_events WHERE response_id = $1 "
                                "ORDER BY sequence_number", response_id)
    assert [row["sequence_number"] for row in rows] == list(range(len(rows)))
    return orjson.loads(blob), [bytes(row["event"]) for row in rows]


async def test_only_runs_without_a_live_lease_are_failed_each_once(databases, postgres_url: str) -> None:
    db_a, db_b = databases
    a, b, c = (leases(db_a, postgres_url, "a"), leases(db_b, postgres_url, "b"), leases(db_b, postgres_url, "c"))
    await a.claim("resp_live")
    await add_run(db_a, "resp_live")
    await add_run(db_a, "resp_unclaimed", status="queued", events=1)  # its replica died before claiming it
    await add_run(db_a, "resp_done", status="completed")

    assert await b.fail_abandoned(interrupted()) == ["resp_unclaimed"]
    assert (await stored(db_a, "resp_live"))[0]["status"] == "in_progress"  # a's lease is live: untouched
    assert await b.fail_abandoned(interrupted()) == []

    await expire(db_a, "resp_live")  # a stopped renewing
    swept = await asyncio.gather(b.fail_abandoned(interrupted()), c.fail_abandoned(interrupted()))
    assert sorted(swept[0] + swept[1]) == ["resp_live"]  # one sweeper ended it
    response, events = await stored(db_a, "resp_live")
    assert response["status"] == "failed" and failure_reason(response["error"]) == INTERRUPTED_CODE
    assert response["output"][0]["status"] == "incomplete"
    assert len(events) == 4 and events[-1].startswith(b"event: response.failed\n")
    assert b'"sequence_number":3' in events[-1]
    assert sum(event.startswith(b"event: response.failed\n") for event in events) == 1
    # the owner learns at its next heartbeat that the run is no longer its own
    renewal = await a.renew(["resp_live"])
    assert renewal.lost == {"resp_live"}
    assert (await stored(db_a, "resp_done"))[0]["status"] == "completed"


async def test_a_live_owner_keeps_its_run_and_renewal_extends_the_lease(databases, postgres_url: str) -> None:
    db_a, db_b = databases
    a, b = leases(db_a, postgres_url, "a"), leases(db_b, postgres_url, "b")
    await a.claim("resp_1")
    await add_run(db_a, "resp_1")
    assert (await a.renew(["resp_1"])).lost == frozenset()  # renewed while held: extended
    assert await b.fail_abandoned(interrupted()) == []
    assert await b.close_abandoned("resp_1", cancelled, tenant="") is None
    await expire(db_a, "resp_1")
    assert await b.close_abandoned("resp_1", cancelled, tenant="someone-else") is None
    closed = await b.close_abandoned("resp_1", cancelled, tenant="")
    assert closed is not None and closed["status"] == "cancelled"
    response, events = await stored(db_a, "resp_1")
    assert response["status"] == "cancelled" and events[-1].startswith(b"event: response.failed\n")
    assert await b.close_abandoned("resp_1", cancelled, tenant="") is None  # ended: nothing more to close


async def test_a_lease_that_ran_out_is_lost_even_before_anyone_takes_it(databases, postgres_url: str) -> None:
    """By the database's clock: past ``lease_until`` the run is anyone's sweep's, so its owner's writes are fenced
    off and its renewal finds it lost (the owner stops it) — never renewed back while a taker may be reading."""
    db_a, _ = databases
    a = leases(db_a, postgres_url, "a")
    await a.claim("resp_1")
    await add_run(db_a, "resp_1")
    await expire(db_a, "resp_1")
    log = PostgresEventLog(db_a)
    with pytest.raises(LeaseLost):
        await log.append("resp_1", [(3, b"event: x\ndata: {}\n\n")], tenant="", lease_owner="a")
    assert await log.after("resp_1", 2, tenant="") == []
    assert (await a.renew(["resp_1"])).lost == {"resp_1"}


async def test_a_cancel_request_reaches_the_owner(databases, postgres_url: str) -> None:
    db_a, db_b = databases
    a, b = leases(db_a, postgres_url, "a"), leases(db_b, postgres_url, "b")
    asked: asyncio.Queue[str] = asyncio.Queue()
    await a.start(asked.put_nowait)
    await b.start(lambda response_id: None)
    try:
        await a.claim("resp_1")
        await add_run(db_a, "resp_1")
        assert await b.request_cancel("resp_1", tenant="") is True
        assert await asyncio.wait_for(asked.get(), timeout=10) == "resp_1"  # notified
        assert (await a.renew(["resp_1"])).cancel_requested == {"resp_1"}  # and seen by the heartbeat
        assert await b.request_cancel("resp_unknown", tenant="") is False
        assert await b.request_cancel("resp_1", tenant="someone-else") is False  # not theirs: unknown to them
        await expire(db_a, "resp_1")
        assert await b.request_cancel("resp_1", tenant="") is False  # nobody live holds it
    finally:
        await a.close()
        await b.close()


async def test_appended_events_and_a_release_wake_followers_elsewhere(databases, postgres_url: str) -> None:
    db_a, db_b = databases
    a, b = leases(db_a, postgres_url, "a"), leases(db_b, postgres_url, "b")
    await b.start(lambda response_id: None)
    try:
        await a.claim("resp_1")
        await add_run(db_a, "resp_1", events=0)
        async with b.watch("resp_1") as changed, b.watch("resp_other") as other:
            async with db_a.acquire() as conn:
                await conn.executemany("INSERT INTO response_events VALUES ($1, $2, $3)",
                                       [("resp_1", 0, b"x"), ("resp_1", 1, b"y")])
            await asyncio.wait_for(changed.wait(), timeout=10)
            changed.clear()
            await a.release("resp_1")
            await asyncio.wait_for(changed.wait(), timeout=10)
            assert not other.is_set()
        async with db_a.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM background_runs") == 0
    finally:
        await b.close()
