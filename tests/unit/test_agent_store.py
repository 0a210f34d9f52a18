"""The Agents API's store (records and session events) on SQLite and PostgreSQL, and a session's event log read
back across what left memory: every event once, in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai._streaming import SSEDecoder

from responses_bridge.services.agents.events import KEEPALIVE, SessionEvents, SessionLog
from responses_bridge.store import open as store_open
from responses_bridge.store.base_agents import AgentStore, Record
from responses_bridge.store.records import InvalidCursor, LeaseLost
from tests.unit.store_kinds import KINDS, postgres_database_url


@contextlib.asynccontextmanager
async def agent_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AgentStore]:
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(postgres_database_url(request)) if kind == "postgres" else None
        opened = await store_open.open_stores(str(tmp_path / "agents.db"), url)
        try:
            yield opened.agents
        finally:
            await opened.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_records_are_their_tenants_paged_and_deleted_with_their_session(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    async with agent_store(kind, request, tmp_path) as store:
        for number in range(5):
            await store.put("session", f"s{number}", {"id": f"s{number}", "metadata": {"n": str(number % 2)}},
                            tenant="a", parent="agent_1")
        await store.put("session", "theirs", {"id": "theirs", "metadata": {}}, tenant="b", parent="agent_1")
        await store.put("session", "s1", {"id": "s1", "metadata": {"n": "1"}, "changed": True}, tenant="a",
                        parent="agent_1")
        # another tenant can neither read nor overwrite a record
        await store.put("session", "s2", {"id": "s2", "stolen": True}, tenant="b", parent="agent_1")
        assert await store.get("session", "s2", tenant="b") is None
        assert (await store.get("session", "s2", tenant="a")) == {"id": "s2", "metadata": {"n": "0"}}
        assert await store.count("session", tenant="a") == 5

        page = await store.page("session", tenant="a", limit=2)
        assert [r["id"] for r in page.data] == ["s4", "s3"] and page.has_more
        page = await store.page("session", tenant="a", limit=10, after="s3")
        assert [r["id"] for r in page.data] == ["s2", "s1", "s0"] and not page.has_more
        assert page.data[1]["changed"] is True  # replaced in place, listed where it was first stored
        page = await store.page("session", tenant="a", order="asc", metadata=[("n", "1")])
        assert [r["id"] for r in page.data] == ["s1", "s3"]
        assert (await store.page("session", tenant="a", parent="agent_2")).data == []
        with pytest.raises(InvalidCursor):
            await store.page("session", tenant="a", after="theirs")

        await store.put("turn", "t1", {"id": "t1"}, tenant="a", parent="s1")
        await store.put("item", "i1", {"id": "i1"}, tenant="a", parent="s1", scope="t1")
        await store.put("item", "i2", {"id": "i2"}, tenant="a", parent="s1", scope="t2")
        assert [r["id"] for r in (await store.page("item", tenant="a", parent="s1", scope="t1")).data] == ["i1"]
        await store.append_events("s1", [(0, "e0", b"zero"), (1, "e1", b"one")], tenant="a")
        await store.append_events("s1", [(1, "e1", b"again")], tenant="a")  # a sequence stored stays
        assert await store.events_after("s1", -1, tenant="a") == [(0, "e0", b"zero"), (1, "e1", b"one")]
        assert await store.events_after("s1", -1, tenant="b") == []
        assert await store.event_sequence("s1", "e1", tenant="a") == 1
        assert await store.event_sequence("s1", "e1", tenant="b") is None
        assert await store.last_event("s1", tenant="a") == 1

        assert not await store.delete("session", "s1", tenant="b")
        assert await store.delete("session", "s1", tenant="a")
        assert await store.get("turn", "t1", tenant="a") is None and await store.get("item", "i2", tenant="a") is None
        assert await store.events_after("s1", -1, tenant="a") == [] and await store.last_event("s1", tenant="a") == -1
        await store.put("agent", "agent_1", {"id": "agent_1"}, tenant="a")
        assert await store.delete("agent", "agent_1", tenant="a")
        assert await store.get("session", "s0", tenant="a") is not None  # a session outlives its agent


@pytest.mark.parametrize("kind", KINDS)
async def test_a_record_holding_nul_characters_is_stored_both_ways(kind: str, request: pytest.FixtureRequest,
                                                                   tmp_path: Path) -> None:
    """A NUL in any string of a record (an automation's input, say): SQLite keeps it; PostgreSQL's jsonb cannot
    hold one (it refused the whole record: a 500), so there it is U+FFFD, as in every text column."""
    body = {"id": "a1", "metadata": {"k\x00": "v\x00"}, "input": [{"text": "a\x00b"}], "plain": "\\u0000"}
    async with agent_store(kind, request, tmp_path) as store:
        await store.put("automation", "a1", body, tenant="a")
        await store.commit("s1", [Record("automation", "a2", {**body, "id": "a2"})], [], tenant="a")
        stand_in = "\x00" if kind == "sqlite" else "\ufffd"
        for record_id in ("a1", "a2"):
            found = await store.get("automation", record_id, tenant="a")
            assert found is not None
            assert found["input"] == [{"text": f"a{stand_in}b"}]
            assert found["metadata"] == {f"k{stand_in}": f"v{stand_in}"}
            assert found["plain"] == "\\u0000"  # a backslash and 'u0000' as written, in either store


@pytest.mark.parametrize("kind", KINDS)
async def test_a_sessions_subagents_their_turns_and_items_go_with_it_alone(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    async with agent_store(kind, request, tmp_path) as store:
        for session, subagent in (("s1", "sub1"), ("s2", "sub2")):
            await store.put("session", session, {"id": session}, tenant="a", parent="agent_1")
            await store.put("subagent", subagent, {"id": subagent}, tenant="a", parent=session)
            await store.put("subagent_turn", f"{subagent}_t", {"id": f"{subagent}_t"}, tenant="a", parent=subagent)
            for item in ("i1", "i2"):
                await store.put("subagent_item", f"{subagent}_{item}", {"id": item}, tenant="a", parent=subagent,
                                scope=f"{subagent}_t" if item == "i1" else "other")
        # another tenant's record under a parent of the same id is its own, and stays
        await store.put("subagent_turn", "theirs_t", {"id": "theirs_t"}, tenant="b", parent="sub1")
        page = await store.page("subagent_item", tenant="a", parent="sub1", scope="sub1_t")
        assert [r["id"] for r in page.data] == ["i1"]
        assert await store.delete("session", "s1", tenant="a")
        for record_kind, record_id in (("subagent", "sub1"), ("subagent_turn", "sub1_t"),
                                       ("subagent_item", "sub1_i1"), ("subagent_item", "sub1_i2")):
            assert await store.get(record_kind, record_id, tenant="a") is None
        for record_kind, record_id in (("subagent", "sub2"), ("subagent_turn", "sub2_t"),
                                       ("subagent_item", "sub2_i1"), ("subagent_item", "sub2_i2")):
            assert await store.get(record_kind, record_id, tenant="a") is not None
        assert await store.get("subagent_turn", "theirs_t", tenant="b") is not None


async def test_a_reader_gets_every_event_once_across_what_left_memory(tmp_path: Path,
                                                                      request: pytest.FixtureRequest) -> None:
    async with agent_store("sqlite", request, tmp_path) as store:
        events = SessionEvents(store)
        live = await events.log_of("sess_1", "a")
        live.active = True
        early = events.follow("sess_1", -1, tenant="a", until_idle=True)
        read_early: list[bytes] = []

        async def read() -> None:
            async for chunk in early:
                read_early.append(chunk)

        reader = asyncio.create_task(read())
        for number in range(2500):
            await live.emit({"type": "agent.session.turn.output_text.delta", "delta": str(number)},
                            durable=number % 700 == 0)
        await live.emit({"type": "agent.session.idle", "session": {}}, durable=True)
        await asyncio.wait_for(reader, 30)
        assert live.first > 0  # durable frames left memory

        late = [chunk async for chunk in events.follow("sess_1", 10, tenant="a", until_idle=True)]
        for chunks, start in ((read_early, 0), (late, 11)):
            numbers = [event.get("delta") for event in _events(b"".join(chunks))]
            assert numbers == [str(n) for n in range(start, 2500)] + [None]
        assert await events.sequence_of("sess_1", _events(b"".join(late))[5]["event_id"], tenant="a") == 16


def _events(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]


async def test_a_silent_stream_is_kept_alive_without_an_empty_event_for_the_sdk(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The SDK's decoder keeps the last ``id``: a comment ended by a blank line would be an event with no data."""
    async with agent_store("sqlite", request, tmp_path) as store:
        events = SessionEvents(store)
        live = await events.log_of("sess_2", "a")
        await live.emit({"type": "agent.session.turn.output_text.delta", "delta": "one"})
        await live.flush()  # an event is shown once it is stored
        follower = events.follow("sess_2", -1, tenant="a", until_idle=True, keepalive=0.05)
        first = await anext(follower)
        assert await anext(follower) == b""  # silence: the door writes KEEPALIVE
        await live.emit({"type": "agent.session.idle", "session": {}})
        rest = [chunk async for chunk in follower]
        wire = first + KEEPALIVE + b"".join(rest)
        decoded = list(SSEDecoder().iter_bytes(iter([wire])))
        assert [sse.event for sse in decoded] == ["agent.session.turn.output_text.delta", "agent.session.idle"]
        assert all(sse.data for sse in decoded)


async def test_a_session_lease_is_taken_and_judged_by_the_databases_clock(
        request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: a process whose wall clock is 20 s ahead (or behind) neither takes a session another holds nor
    hands its own out early: the lease's expiry is set and compared by the database's ``now()``."""
    import time

    async with agent_store("postgres", request, tmp_path) as store:
        assert await store.claim_session("sess_1", "holder", seconds=30)
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 20)  # the taker's clock runs ahead
        assert not await store.claim_session("sess_1", "taker", seconds=30)
        monkeypatch.setattr(time, "time", lambda: real() - 40)  # the holder's clock runs behind: its renewal holds
        assert await store.renew_sessions(["sess_1", "sess_2"], "holder", seconds=0.2) == {"sess_1"}
        assert await store.renew_sessions(["sess_1"], "taker", seconds=30) == set()  # only the holder renews
        monkeypatch.setattr(time, "time", real)
        await asyncio.sleep(0.3)  # by the database's clock the lease ran out: lost, renewed by nobody
        assert await store.renew_sessions(["sess_1"], "holder", seconds=30) == set()
        assert await store.claim_session("sess_1", "taker", seconds=30)  # anyone takes it
        assert not await store.claim_session("sess_1", "holder", seconds=30)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_turns_writes_are_fenced_by_the_sessions_lease(kind: str, request: pytest.FixtureRequest,
                                                              tmp_path: Path) -> None:
    """With ``owner``, a session's events (and the records committed with them) are stored only while that owner
    holds the session's lease: once it ran out and another process took it, the write is refused (``LeaseLost``)
    and nothing of it is stored; a reader of the log, and the log's live tail, are shown none of it."""
    async with agent_store(kind, request, tmp_path) as store:
        frame = (0, "sevt_1", b"id: sevt_1\nevent: x\ndata: {}\n\n")
        assert await store.claim_session("sess_1", "holder", seconds=0.2)
        await store.append_events("sess_1", [frame], tenant="t", owner="holder")
        await asyncio.sleep(0.3)
        assert await store.claim_session("sess_1", "taker", seconds=30)
        late = (1, "sevt_2", b"id: sevt_2\nevent: x\ndata: {}\n\n")
        with pytest.raises(LeaseLost):
            await store.append_events("sess_1", [late], tenant="t", owner="holder")
        with pytest.raises(LeaseLost):
            await store.commit("sess_1", [Record("turn", "turn_1", {"id": "turn_1"}, parent="sess_1")], [late],
                               tenant="t", owner="holder")
        assert [sequence for sequence, _, _ in await store.events_after("sess_1", -1, tenant="t")] == [0]
        assert await store.get("turn", "turn_1", tenant="t") is None
        await store.append_events("sess_1", [late], tenant="t", owner="taker")  # the holder of the lease writes
        live = SessionEvents(store).logs.setdefault("sess_1", SessionLog(store, "sess_1", "t", 2))
        live.fence = {"owner": "holder"}
        fenced: list[str] = []
        live.on_fenced = lambda: fenced.append("sess_1")
        await live.emit({"type": "agent.session.turn.output_text.delta", "delta": "late"})
        with pytest.raises(LeaseLost):
            await live.flush()
        assert fenced == ["sess_1"] and live.shown_until == 2 and live.in_memory_after(1) == []
        assert [sequence for sequence, _, _ in await store.events_after("sess_1", -1, tenant="t")] == [0, 1]


async def test_the_automations_scheduler_reads_the_databases_clock(
        request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: what the scheduler fires by (``database_time``) is the server's time, whatever this process's
    wall clock says."""
    import time

    async with agent_store("postgres", request, tmp_path) as store:
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 20)
        assert abs(await store.database_time() - real()) < 5
