"""Conversations on the shared SQLite database: the store, and the service's validation and rendering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.protocol.errors import APIError
from responses_bridge.run.response_run import ResponseRun
from responses_bridge.services.responses.conversations import ConversationService, render_item
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT, ConversationStore
from responses_bridge.store.records import InvalidCursor, InvalidPageArgs
from responses_bridge.store.sqlite.conversations import SQLiteConversationStore


def item(item_id: str, text: str = "hi") -> dict:
    return {"type": "message", "id": item_id, "status": "completed", "role": "user",
            "content": [{"type": "input_text", "text": text}]}


@pytest.fixture(params=["file", "memory"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLiteResponseStore]:
    path = str(tmp_path / "bridge.db") if request.param == "file" else ":memory:"
    async with SQLiteResponseStore(path) as opened:
        yield opened


@pytest.fixture
def store(db: SQLiteResponseStore) -> SQLiteConversationStore:
    return SQLiteConversationStore(db)


def ids_of(items: list[dict]) -> list[str]:
    return [i["id"] for i in items]


async def test_is_a_conversation_store(store: SQLiteConversationStore) -> None:
    assert isinstance(store, ConversationStore)


async def test_create_append_load_in_order(store: SQLiteConversationStore) -> None:
    await store.create_conversation("conv_a", 10, {"k": "v"}, [item("i0"), item("i1")], tenant=DEFAULT_TENANT)
    assert await store.append_items("conv_a", [item("i2"), item("i3"), item("i4")], tenant=DEFAULT_TENANT)
    assert await store.append_items("conv_a", [], tenant=DEFAULT_TENANT)
    assert ids_of(await store.load_items("conv_a", tenant=DEFAULT_TENANT)) == ["i0", "i1", "i2", "i3", "i4"]
    conversation = await store.get_conversation("conv_a", tenant=DEFAULT_TENANT)
    assert (conversation.id, conversation.created_at, conversation.metadata) == ("conv_a", 10, {"k": "v"})
    assert await store.load_items("conv_missing", tenant=DEFAULT_TENANT) is None
    assert not await store.append_items("conv_missing", [item("x")], tenant=DEFAULT_TENANT)


async def test_empty_conversation_loads_as_empty_list(store: SQLiteConversationStore) -> None:
    await store.create_conversation("conv_e", 1, {}, [], tenant=DEFAULT_TENANT)
    assert await store.load_items("conv_e", tenant=DEFAULT_TENANT) == []


async def test_pagination_both_orders(store: SQLiteConversationStore) -> None:
    await store.create_conversation("conv_p", 1, {}, [item(f"i{n}") for n in range(5)], tenant=DEFAULT_TENANT)
    page = await store.list_items("conv_p", limit=2, tenant=DEFAULT_TENANT)
    assert ids_of(page.data) == ["i4", "i3"] and page.has_more and (page.first_id, page.last_id) == ("i4", "i3")
    page = await store.list_items("conv_p", limit=2, after="i3", tenant=DEFAULT_TENANT)
    assert ids_of(page.data) == ["i2", "i1"] and page.has_more
    page = await store.list_items("conv_p", limit=2, after="i1", tenant=DEFAULT_TENANT)
    assert ids_of(page.data) == ["i0"] and not page.has_more
    page = await store.list_items("conv_p", limit=10, order="asc", after="i2", tenant=DEFAULT_TENANT)
    assert ids_of(page.data) == ["i3", "i4"] and not page.has_more
    with pytest.raises(InvalidCursor) as caught:
        await store.list_items("conv_p", after="nope", tenant=DEFAULT_TENANT)
    assert caught.value.param == "after"
    for bad in ({"limit": 0}, {"limit": 101}, {"order": "up"}):
        with pytest.raises(InvalidPageArgs):
            await store.list_items("conv_p", **bad, tenant=DEFAULT_TENANT)
    assert await store.list_items("conv_missing", tenant=DEFAULT_TENANT) is None


async def test_items_get_delete_and_cascade(store: SQLiteConversationStore, db: SQLiteResponseStore) -> None:
    await store.create_conversation("conv_d", 1, {}, [item("i0"), item("i1"), item("i2")], tenant=DEFAULT_TENANT)
    assert (await store.get_item("conv_d", "i1", tenant=DEFAULT_TENANT))["id"] == "i1"
    assert await store.delete_item("conv_d", "i1", tenant=DEFAULT_TENANT)
    assert not await store.delete_item("conv_d", "i1", tenant=DEFAULT_TENANT)
    assert await store.get_item("conv_d", "i1", tenant=DEFAULT_TENANT) is None
    assert await store.append_items("conv_d", [item("i3")],
                                    tenant=DEFAULT_TENANT)  # numbering continues after a deletion
    assert ids_of(await store.load_items("conv_d", tenant=DEFAULT_TENANT)) == ["i0", "i2", "i3"]
    assert (await store.update_conversation("conv_d", {"a": "b"}, tenant=DEFAULT_TENANT)).metadata == {"a": "b"}
    assert await store.update_conversation("conv_missing", {}, tenant=DEFAULT_TENANT) is None
    assert await store.delete_conversation("conv_d", tenant=DEFAULT_TENANT)
    assert not await store.delete_conversation("conv_d", tenant=DEFAULT_TENANT)
    async with db.reading() as conn:
        rows = list(await conn.execute_fetchall("SELECT count(*) FROM conversation_items"))
    assert rows == [(0,)]


async def test_concurrent_appends_never_collide(store: SQLiteConversationStore) -> None:
    await store.create_conversation("conv_c", 1, {}, [], tenant=DEFAULT_TENANT)
    await asyncio.gather(*(store.append_items("conv_c", [item(f"a{n}"), item(f"b{n}")],
                                              tenant=DEFAULT_TENANT) for n in range(50)))
    loaded = ids_of(await store.load_items("conv_c", tenant=DEFAULT_TENANT))
    assert len(loaded) == 100
    for n in range(50):  # each append's items stay together, in order
        assert loaded.index(f"b{n}") == loaded.index(f"a{n}") + 1


async def test_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "reopen.db")
    async with SQLiteResponseStore(path) as db:
        await SQLiteConversationStore(db).create_conversation("conv_r", 1, {"x": "y"}, [item("i0")],
                                                              tenant=DEFAULT_TENANT)
    async with SQLiteResponseStore(path) as db:
        assert ids_of(await SQLiteConversationStore(db).load_items("conv_r", tenant=DEFAULT_TENANT)) == ["i0"]


async def test_load_is_one_statement(store: SQLiteConversationStore, db: SQLiteResponseStore) -> None:
    await store.create_conversation("conv_q", 1, {}, [item(f"i{n}") for n in range(150)], tenant=DEFAULT_TENANT)
    statements: list[str] = []
    async with db.reading() as conn:
        await conn.set_trace_callback(statements.append)
    try:
        assert len(await store.load_items("conv_q", tenant=DEFAULT_TENANT)) == 150
    finally:
        async with db.reading() as conn:
            await conn.set_trace_callback(None)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1


# --- service ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def service(store: SQLiteConversationStore) -> ConversationService:
    return ConversationService(store)


async def test_service_create_normalises_items_and_checks_limits(service: ConversationService) -> None:
    created = await service.create({"items": [{"role": "user", "content": "hello"}], "metadata": {"a": "1"}},
                                   tenant=DEFAULT_TENANT)
    assert created["object"] == "conversation" and created["id"].startswith("conv_")
    assert set(created) == {"id", "object", "created_at", "metadata"} and created["metadata"] == {"a": "1"}
    page = await service.list_items(created["id"], after=None, limit=20, order="asc", tenant=DEFAULT_TENANT)
    (stored,) = page["data"]
    assert stored["type"] == "message" and stored["id"].startswith("msg_")
    assert stored["content"] == [{"type": "input_text", "text": "hello"}]
    for body, param in [({"items": [{"role": "user", "content": "x"}] * 21}, "items"),
                        ({"items": [{"type": "bogus"}]}, "items[0].type"),
                        ({"metadata": {f"k{n}": "v" for n in range(17)}}, "metadata"),
                        ({"metadata": {"k": "v" * 513}}, "metadata"),
                        ({"metadata": {"k" * 65: "v"}}, "metadata"),
                        ({"metadata": {"k": 5}}, "metadata")]:
        with pytest.raises(APIError) as caught:
            await service.create(body, tenant=DEFAULT_TENANT)
        assert (caught.value.status, caught.value.param) == (400, param), body


async def test_service_not_found_and_delete_shapes(service: ConversationService) -> None:
    created = await service.create({}, tenant=DEFAULT_TENANT)
    with pytest.raises(APIError) as caught:
        await service.get("conv_nope", tenant=DEFAULT_TENANT)
    assert caught.value.status == 404
    with pytest.raises(APIError) as caught:
        await service.get_item(created["id"], "msg_nope", tenant=DEFAULT_TENANT)
    assert caught.value.status == 404 and caught.value.param == "item_id"
    assert await service.delete(created["id"],
                                tenant=DEFAULT_TENANT) == {"id": created["id"], "object": "conversation.deleted",
                                                   "deleted": True}


def test_render_item_keeps_logprobs_only_when_included() -> None:
    message = {"type": "message", "id": "m", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "a", "annotations": [], "logprobs": [{"token": "a"}]}]}
    assert render_item(message, None)["content"][0]["logprobs"] == []
    assert render_item(message, ["message.output_text.logprobs"]) is message
    assert message["content"][0]["logprobs"] == [{"token": "a"}]  # not modified in place


# --- the engine: a finished turn joins its conversation, a failed one does not ------------------------------------

def _completion(text: str, finish_reason: str = "stop") -> bytes:
    return orjson.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": finish_reason}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


async def _turn(db: SQLiteResponseStore, service: ConversationService, body: dict, status: int,
                answer: bytes) -> tuple[ResponseRun, dict]:
    exchange = ResponseRun(db, EngineOptions(), conversations=service, tenant=DEFAULT_TENANT)
    call = await exchange.begin(orjson.dumps({"model": "m", **body}))
    exchange.on_upstream_headers(status, "application/json")
    exchange.on_upstream_chunk(answer)
    reply = await exchange.finish()
    return exchange, {"status": reply.status, "body": orjson.loads(reply.body), "upstream": orjson.loads(call.body)}


async def test_exchange_appends_finished_turns_only(db: SQLiteResponseStore, service: ConversationService) -> None:
    conversation = await service.create({"items": [{"role": "user", "content": "earlier"}]}, tenant=DEFAULT_TENANT)
    cid = conversation["id"]
    _, done = await _turn(db, service, {"input": "hi", "conversation": cid}, 200, _completion("hello"))
    assert done["status"] == 200 and done["body"]["conversation"] == {"id": cid}
    assert [m["content"] for m in done["upstream"]["messages"]] == ["earlier", "hi"]
    _, cut = await _turn(db, service, {"input": "more", "conversation": {"id": cid}}, 200,
                         _completion("a b", "length"))
    assert cut["body"]["status"] == "incomplete"
    _, failed = await _turn(db, service, {"input": "fails", "conversation": cid}, 500, b'{"error": "boom"}')
    assert failed["status"] == 502
    items = (await service.list_items(cid, after=None, limit=100, order="asc", tenant=DEFAULT_TENANT))["data"]
    texts = [part.get("text") for item in items for part in item["content"]]
    assert texts == ["earlier", "hi", "hello", "more", "a b"]


async def test_exchange_conversation_errors(db: SQLiteResponseStore, service: ConversationService) -> None:
    cid = (await service.create({}, tenant=DEFAULT_TENANT))["id"]
    for body, status in [({"conversation": "conv_nope"}, 404),
                         ({"conversation": cid, "previous_response_id": "resp_x"}, 400)]:
        with pytest.raises(APIError) as caught:
            await ResponseRun(db, EngineOptions(), conversations=service, tenant=DEFAULT_TENANT).begin(
                orjson.dumps({"model": "m", "input": "x", **body}))
        assert (caught.value.status, caught.value.param) == (status, "conversation")


async def test_conversation_deleted_during_the_response(db: SQLiteResponseStore,
                                                        service: ConversationService) -> None:
    cid = (await service.create({}, tenant=DEFAULT_TENANT))["id"]
    exchange = ResponseRun(db, EngineOptions(), conversations=service, tenant=DEFAULT_TENANT)
    await exchange.begin(orjson.dumps({"model": "m", "input": "x", "conversation": cid}))
    await service.delete(cid, tenant=DEFAULT_TENANT)
    exchange.on_upstream_headers(200, "application/json")
    exchange.on_upstream_chunk(_completion("ok"))
    reply = await exchange.finish()
    assert reply.status == 200  # the response is still good, and stored
    assert (await db.get_response(exchange.response_id, tenant=DEFAULT_TENANT))["status"] == "completed"
