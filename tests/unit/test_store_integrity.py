"""The store never stalls and never reports false state: item layout, group commit, prompts under concurrency,
conversations joined only by stored turns, migration of existing data, and honest readiness."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from responses_bridge.adapters.http.app import create_app
from responses_bridge.config.settings import Settings
from responses_bridge.demo.procs import free_port
from responses_bridge.engine.options import EngineOptions
from responses_bridge.run.response_run import ResponseRun
from responses_bridge.runtime import Runtime
from responses_bridge.services.readiness import check_readiness
from responses_bridge.services.responses.conversations import ConversationService
from responses_bridge.services.responses.prompts import PromptService
from responses_bridge.store import LATEST_VERSION, MIGRATIONS, SQLiteResponseStore, migrate
from responses_bridge.store.base import DEFAULT_TENANT
from responses_bridge.store.sqlite.conversations import SQLiteConversationStore
from responses_bridge.store.sqlite.prompts import SQLitePromptStore
from tests.support.runtime import runtime_over

BLOB_TABLES = ("response_items", "conversation_items", "prompt_versions", "response_events")


@pytest.fixture
async def db(tmp_path) -> AsyncIterator[SQLiteResponseStore]:
    async with SQLiteResponseStore(str(tmp_path / "store.db")) as opened:
        yield opened


def response(response_id: str, status: str = "completed", output: list[dict] | None = None) -> dict:
    return {"id": response_id, "object": "response", "created_at": 1, "status": status, "model": "m",
            "output": output or []}


def message(text: str, item_id: str | None = None) -> dict:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    if item_id is not None:
        item["id"] = item_id
    return item


# --- layout: a blob never sits in an index b-tree --------------------------------------------------------------------


async def test_blob_tables_keep_their_blobs_out_of_index_btrees(db: SQLiteResponseStore, tmp_path) -> None:
    """The stall came from WITHOUT ROWID tables, where a 60 MB row is a b-tree key copied into parent pages on
    every split next to it. Every table holding JSON must be a rowid table, and no index may cover a blob."""
    with sqlite3.connect(str(tmp_path / "store.db")) as conn:
        for table in BLOB_TABLES:
            info = conn.execute("SELECT name, wr FROM pragma_table_list WHERE name = ?", (table,)).fetchone()
            assert info == (table, 0), f"{table} must be a rowid table"
            for (index,) in conn.execute("SELECT name FROM pragma_index_list(?)", (table,)).fetchall():
                columns = {row[0] for row in conn.execute("SELECT name FROM pragma_index_info(?)", (index,))}
                assert not columns & {"item", "body", "event"}, f"index {index} holds a blob"


async def test_a_save_next_to_a_huge_row_never_rewrites_it(db: SQLiteResponseStore, tmp_path) -> None:
    """Saving thousands of items whose response id sorts right next to a huge stored item writes only pages of the
    new rows: counted as the pages the saves append to the write-ahead log (checkpoints off meanwhile). When the
    huge row was a b-tree key, page splits next to it rewrote its 4 MB again and again."""
    huge = "x" * 4_000_000
    await db.save_response(response("resp_m"), [message(huge, "msg_big")], tenant=DEFAULT_TENANT)
    wal = tmp_path / "store.db-wal"
    async with db.writing() as conn:
        await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await conn.execute("PRAGMA wal_autocheckpoint = 0")
    assert wal.stat().st_size == 0
    for neighbour in ("resp_l", "resp_n"):  # sorts just before and just after the huge one
        await db.save_response(response(neighbour), [message(f"m{i}", f"msg_{i}") for i in range(3000)],
                               tenant=DEFAULT_TENANT)
    written = wal.stat().st_size
    assert written < 4_000_000, f"{written} bytes written for 6,000 small items"
    history = await db.load_history("resp_m", tenant=DEFAULT_TENANT)
    assert history is not None and history[0]["content"][0]["text"] == huge


# --- migration 4 keeps existing data --------------------------------------------------------------------------------


async def test_migration_4_moves_existing_rows(tmp_path) -> None:
    import aiosqlite

    path = str(tmp_path / "old.db")
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA foreign_keys = ON")
    assert await migrate(conn, [m for m in MIGRATIONS if m[0] <= 3]) == 3
    await conn.execute("INSERT INTO response_writes VALUES ('resp_a', 1, 'completed', 'm', NULL, ?, ?, ?)",
                       (orjson.dumps(response("resp_a")), orjson.dumps([message("one", "msg_1"),
                                                                           message("two", "msg_2")]).decode(),
                        orjson.dumps([{"type": "message", "id": "msg_out", "role": "assistant",
                                       "content": []}]).decode()))
    await conn.execute("INSERT INTO conversations (id, created_at, metadata) VALUES ('conv_a', 1, '{}')")
    await conn.execute("INSERT INTO conversation_item_writes VALUES ('conv_a', ?)",
                       (orjson.dumps([message("c1", "msg_c1")]).decode(),))
    await conn.execute("INSERT INTO prompt_writes VALUES ('pmpt_a', 1, ?)",
                       (orjson.dumps({"instructions": "x"}).decode(),))
    await conn.execute("INSERT INTO response_events VALUES ('resp_a', 0, x'6576')")
    await conn.close()

    async with SQLiteResponseStore(path) as store:
        assert await store.load_history("resp_a",
                                        tenant=DEFAULT_TENANT) == [message("one", "msg_1"), message("two", "msg_2"),
                                                      {"type": "message", "id": "msg_out", "role": "assistant",
                                                       "content": []}]
        page = await store.list_input_items("resp_a", after="msg_1", order="asc", tenant=DEFAULT_TENANT)
        assert [item["id"] for item in page.data] == ["msg_2"]
        conversations = SQLiteConversationStore(store)
        assert await conversations.load_items("conv_a", tenant=DEFAULT_TENANT) == [message("c1", "msg_c1")]
        assert await conversations.append_items("conv_a", [message("c2", "msg_c2")], tenant=DEFAULT_TENANT)
        assert [item["id"] for item in await conversations.load_items("conv_a",
                                                                      tenant=DEFAULT_TENANT)] == ["msg_c1", "msg_c2"]
        prompts = SQLitePromptStore(store)
        second = await prompts.add_version("pmpt_a", 2, {"instructions": "y"}, tenant=DEFAULT_TENANT)
        assert second is not None and second.version == 2
        async with store.reading() as reader:
            rows = list(await reader.execute_fetchall("SELECT sequence_number, event FROM response_events"))
            version = next(iter(await reader.execute_fetchall("PRAGMA user_version")))[0]
        assert rows == [(0, b"ev")] and version == LATEST_VERSION
        assert await store.delete_response("resp_a", tenant=DEFAULT_TENANT)
        async with store.reading() as reader:
            left = list(await reader.execute_fetchall(
                "SELECT (SELECT count(*) FROM response_items), (SELECT count(*) FROM response_events)"))
        assert left == [(0, 0)]


# --- group commit: an error reaches only the callers whose rows failed ---------------------------------------------


async def test_group_commit_fails_only_the_failing_save(db: SQLiteResponseStore) -> None:
    async with db.writing() as conn:  # a row the database refuses, in the middle of a batch
        await conn.execute("CREATE TEMP TRIGGER refuse BEFORE INSERT ON responses WHEN NEW.id = 'resp_bad' "
                           "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    ids = [f"resp_{i:02d}" for i in range(10)]
    ids.insert(5, "resp_bad")
    # all queued while the lock is held, so they are committed as one batch
    async with db.writing():
        saves = [asyncio.ensure_future(db.save_response(response(rid), [message(rid, f"msg_{rid}")],
                                                        tenant=DEFAULT_TENANT)) for rid in ids]
        await asyncio.sleep(0)
    outcomes = await asyncio.gather(*saves, return_exceptions=True)
    failed = [rid for rid, outcome in zip(ids, outcomes, strict=True) if isinstance(outcome, Exception)]
    assert failed == ["resp_bad"]
    assert isinstance(outcomes[5], sqlite3.IntegrityError)
    for rid in ids:
        stored = await db.get_response(rid, tenant=DEFAULT_TENANT)
        assert (stored is None) == (rid == "resp_bad")
        if stored is not None:
            assert await db.load_history(rid, tenant=DEFAULT_TENANT) == [message(rid, f"msg_{rid}")]
    assert db.write_queue_depth == 0 and db.write_stall_seconds() == 0.0
    with pytest.raises(sqlite3.IntegrityError):  # alone in its batch, too
        await db.save_response(response("resp_bad"), [message("x", "msg_x")], tenant=DEFAULT_TENANT)
    await db.save_response(response("resp_after"), [], tenant=DEFAULT_TENANT)  # and the store goes on
    assert await db.get_response("resp_bad", tenant=DEFAULT_TENANT) is None
    assert await db.get_response("resp_after", tenant=DEFAULT_TENANT) is not None


# --- prompts: concurrent updates each get back their own version ---------------------------------------------------


async def test_concurrent_prompt_updates_each_get_their_own_version(db: SQLiteResponseStore) -> None:
    service = PromptService(SQLitePromptStore(db))
    prompt = await service.create({"instructions": "v1"}, tenant=DEFAULT_TENANT)
    updates = [service.update(prompt["id"], {"instructions": f"update {n}"}, tenant=DEFAULT_TENANT) for n in range(80)]
    results = await asyncio.gather(*updates)
    versions = [int(result["version"]) for result in results]
    assert sorted(versions) == list(range(2, 82))
    for n, result in enumerate(results):
        assert result["instructions"] == f"update {n}"  # the version it wrote, with the body it wrote
        stored = await service.get(prompt["id"], result["version"], tenant=DEFAULT_TENANT)
        assert stored["instructions"] == f"update {n}"


# --- conversations gain only the turns whose response was stored ---------------------------------------------------


class SavesFail(SQLiteResponseStore):
    async def save_response(self, response: dict, input_items: list[dict], **kwargs: object) -> None:
        raise OSError("disk full")


async def _turn(store: SQLiteResponseStore, conversations: ConversationService, conversation_id: str,
                text: str) -> dict:
    exchange = ResponseRun(store, EngineOptions(), conversations=conversations, tenant=DEFAULT_TENANT)
    await exchange.begin(orjson.dumps({"model": "m", "input": text, "conversation": conversation_id}))
    exchange.on_upstream_headers(200, "application/json")
    exchange.on_upstream_chunk(orjson.dumps({
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "answer"}, "finish_reason": "stop"}]}))
    reply = await exchange.finish()
    return {"status": reply.status, "body": orjson.loads(reply.body)}


async def test_a_turn_whose_response_fails_to_save_does_not_join_its_conversation(tmp_path) -> None:
    async with SavesFail(str(tmp_path / "conv.db")) as store:
        conversations = ConversationService(SQLiteConversationStore(store))
        conversation = await conversations.create({}, tenant=DEFAULT_TENANT)
        outcome = await _turn(store, conversations, conversation["id"], "hello")
        assert outcome["status"] >= 500
        assert await conversations.load_items(conversation["id"], tenant=DEFAULT_TENANT) == []


async def test_a_stored_turn_joins_its_conversation(db: SQLiteResponseStore) -> None:
    conversations = ConversationService(SQLiteConversationStore(db))
    conversation = await conversations.create({}, tenant=DEFAULT_TENANT)
    outcome = await _turn(db, conversations, conversation["id"], "hello")
    assert outcome["status"] == 200
    items = await conversations.load_items(conversation["id"], tenant=DEFAULT_TENANT)
    assert [item["type"] for item in items] == ["message", "message"]
    assert items[1]["id"] == outcome["body"]["output"][0]["id"]


# --- readiness is honest about a stalled writer ----------------------------------------------------------------------


async def _serve(runtime: Runtime) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(runtime))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def test_ready_turns_503_while_a_write_is_stalled_and_when_draining(db: SQLiteResponseStore) -> None:
    runtime = runtime_over(settings=Settings(store_stall_seconds=0.2), store=db)
    runner, base = await _serve(runtime)
    try:
        async with aiohttp.ClientSession() as session:
            async def get(path: str) -> tuple[int, dict]:
                async with session.get(base + path) as answer:
                    return answer.status, await answer.json()

            assert (await get("/health/ready"))[0] == 200
            release = asyncio.Event()

            async def stuck_writer() -> None:
                async with db.writing():  # a writer stuck behind one long statement
                    await release.wait()

            holder = asyncio.create_task(stuck_writer())
            waiting = asyncio.create_task(db.save_response(response("resp_waits"), [], tenant=DEFAULT_TENANT))
            async with asyncio.timeout(30):
                while db.write_stall_seconds() <= 0.2:  # wait for the condition, not a fixed time
                    await asyncio.sleep(0.02)
            status, body = await get("/health/ready")
            assert status == 503 and body["failed"] == ["store_writes"]
            assert body["checks"]["store_writes"]["stall_seconds"] > 0.2
            assert (await get("/health/live"))[0] == 200
            assert (await get("/health"))[0] == 200
            async with session.get(base + "/metrics") as answer:
                text = await answer.text()
            stall_line = next(line for line in text.splitlines()
                              if line.startswith("responses_bridge_store_write_stall_seconds "))
            assert float(stall_line.split()[1]) > 0.2
            assert "responses_bridge_store_write_queue_depth" in text
            release.set()
            await holder
            await waiting
            # ready again once the writes queued behind the stuck one have gone through (the runtime's own, queued
            # during the stall, may still be on their way on a loaded machine): the condition, not a time
            async with asyncio.timeout(30):
                while (await get("/health/ready"))[0] != 200:
                    await asyncio.sleep(0.02)
            assert 'responses_bridge_store_operation_seconds_count{operation="save"}' in (
                await (await session.get(base + "/metrics")).text())
            runtime.draining = True
            status, body = await get("/health/ready")
            assert status == 503 and body["failed"] == ["not_draining"]
    finally:
        await runner.cleanup()


async def test_a_closed_store_is_not_ready(tmp_path) -> None:
    store = SQLiteResponseStore(str(tmp_path / "closed.db"))
    assert check_readiness(store, stall_limit_seconds=10, draining=False).failed == ["store_open", "store_writes"]
    async with store:
        assert check_readiness(store, stall_limit_seconds=10, draining=False).ready


async def test_grpc_health_follows_readiness(db: SQLiteResponseStore) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from responses_bridge.adapters.extproc.server import start_extproc_server

    runtime = runtime_over(settings=Settings(), store=db)
    server = await start_extproc_server(runtime, "127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def status() -> int:
                return (await stub.Check(health_pb2.HealthCheckRequest(service=""))).status

            assert await status() == health_pb2.HealthCheckResponse.SERVING
            async with asyncio.timeout(30):  # a broken update fails the test instead of hanging it
                runtime.draining = True
                while await status() != health_pb2.HealthCheckResponse.NOT_SERVING:  # updated within a second
                    await asyncio.sleep(0.05)
                runtime.draining = False
                while await status() != health_pb2.HealthCheckResponse.SERVING:
                    await asyncio.sleep(0.05)
    finally:
        server.readiness_task.cancel()
        await server.stop(None)


async def test_loading_a_chain_sorts_no_item_through_sqlite(db: SQLiteResponseStore, tmp_path) -> None:
    """One statement for the whole chain, and no temporary b-tree: sorting there would copy every item's JSON."""
    from responses_bridge.store.sqlite.responses import _LOAD_HISTORY

    with sqlite3.connect(str(tmp_path / "store.db")) as conn:
        params = {"id": "x", "tenant": "t", "max_depth": 9}
        plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + _LOAD_HISTORY, params)]
    assert not any("TEMP B-TREE" in step for step in plan), plan
    await db.save_response(response("resp_1", output=[{"type": "message", "id": "out_1"}]),
                           [message("a", "in_1a"), message("b", "in_1b")], tenant=DEFAULT_TENANT)
    second = response("resp_2", output=[{"type": "message", "id": "out_2"}])
    second["previous_response_id"] = "resp_1"
    await db.save_response(second, [message("c", "in_2")], tenant=DEFAULT_TENANT)
    history = await db.load_history("resp_2", tenant=DEFAULT_TENANT)
    assert [item["id"] for item in history] == ["in_1a", "in_1b", "out_1", "in_2", "out_2"]
