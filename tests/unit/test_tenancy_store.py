"""Ownership in the store's own queries: two tenants, every per-tenant method of the response, event, conversation
and prompt stores. Another tenant's object must answer exactly like a missing one, and nothing a call by the
wrong tenant does may change the owner's data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import orjson
import pytest

from responses_bridge.store import MIGRATIONS, InvalidCursor, SQLiteResponseStore, migrate
from responses_bridge.store.base import DEFAULT_TENANT
from responses_bridge.store.records import ResponseFilter, ResponseIdTaken
from responses_bridge.store.sqlite.conversations import SQLiteConversationStore
from responses_bridge.store.sqlite.events import SQLiteEventLog
from responses_bridge.store.sqlite.prompts import SQLitePromptStore

A, B = "tenant-a", "tenant-b"


def message(item_id: str, text: str = "hi") -> dict:
    return {"id": item_id, "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def response(response_id: str, *, previous: str | None = None, created_at: int = 1_700_000_000,
             status: str = "completed", metadata: dict | None = None, background: bool = False) -> dict:
    return {"id": response_id, "object": "response", "created_at": created_at, "status": status, "model": "m",
            "previous_response_id": previous, "metadata": metadata or {}, "background": background,
            "output": [{"id": f"out_{response_id}", "type": "message", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": response_id, "annotations": []}]}]}


@pytest.fixture(params=["file", "memory"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLiteResponseStore]:
    path = str(tmp_path / "tenancy.db") if request.param == "file" else ":memory:"
    async with SQLiteResponseStore(path) as opened:
        yield opened


# -- responses ---------------------------------------------------------------------------------------------------


async def test_responses_are_invisible_to_another_tenant(db: SQLiteResponseStore) -> None:
    await db.save_response(response("resp_a1", metadata={"k": "v"}), [message("in_a1"), message("in_a2")], tenant=A)
    await db.save_response(response("resp_b1", metadata={"k": "v"}), [message("in_b1")], tenant=B)

    assert (await db.get_response("resp_a1", tenant=A))["id"] == "resp_a1"
    assert await db.get_response("resp_a1", tenant=B) is None
    assert await db.get_response("resp_a1", tenant=DEFAULT_TENANT) is None

    assert (await db.list_input_items("resp_a1", tenant=A)).first_id == "in_a2"  # type: ignore[union-attr]
    assert await db.list_input_items("resp_a1", tenant=B) is None
    with pytest.raises(InvalidCursor):  # a cursor into another tenant's response is no cursor
        await db.list_input_items("resp_b1", tenant=B, after="in_a1")

    assert await db.load_history("resp_a1", tenant=B) is None
    assert [item["id"] for item in await db.load_history("resp_a1", tenant=A) or []] == ["in_a1", "in_a2",
                                                                                        "out_resp_a1"]

    for tenant, own in ((A, "resp_a1"), (B, "resp_b1")):
        assert (await db.list_responses(tenant=tenant)).ids == [own]
        assert (await db.list_responses(tenant=tenant, where=ResponseFilter(metadata=(("k", "v"),)))).ids == [own]
        assert (await db.list_responses(tenant=tenant, where=ResponseFilter(model="m"))).ids == [own]
        assert (await db.list_responses(tenant=tenant, where=ResponseFilter(status="completed"))).ids == [own]
    assert (await db.list_responses(tenant=DEFAULT_TENANT)).ids == []
    for cursor in ("after", "before"):
        with pytest.raises(InvalidCursor):
            await db.list_responses(tenant=B, **{cursor: "resp_a1"})  # type: ignore[arg-type]

    assert not await db.delete_response("resp_a1", tenant=B)
    assert await db.get_response("resp_a1", tenant=A) is not None
    assert await db.delete_response("resp_a1", tenant=A)
    assert await db.get_response("resp_a1", tenant=A) is None


async def test_a_chain_is_walked_only_through_the_tenants_own_responses(db: SQLiteResponseStore) -> None:
    await db.save_response(response("resp_1"), [message("in_1")], tenant=A)
    await db.save_response(response("resp_2", previous="resp_1"), [message("in_2")], tenant=B)  # forged link
    await db.save_response(response("resp_3", previous="resp_2"), [message("in_3")], tenant=B)
    history = await db.load_history("resp_3", tenant=B)
    assert [item["id"] for item in history or []] == ["in_2", "out_resp_2", "in_3", "out_resp_3"]  # stops at B's


async def test_an_id_held_by_another_tenant_is_never_overwritten(db: SQLiteResponseStore) -> None:
    await db.save_response(response("resp_x", metadata={"owner": "a"}), [message("in_a")], tenant=A)
    with pytest.raises(ResponseIdTaken):
        await db.save_response(response("resp_x", status="failed"), [message("in_b")], tenant=B)
    assert (await db.get_response("resp_x", tenant=A))["status"] == "completed"
    assert (await db.list_input_items("resp_x", tenant=A)).data == [message("in_a")]  # type: ignore[union-attr]
    assert (await db.list_responses(tenant=A, where=ResponseFilter(metadata=(("owner", "a"),)))).ids == ["resp_x"]
    # the same tenant replaces its own response (queued -> completed)
    await db.save_response(response("resp_x", status="incomplete"), [message("in_a")], tenant=A)
    assert (await db.get_response("resp_x", tenant=A))["status"] == "incomplete"


async def test_a_response_joins_only_its_tenants_conversation(db: SQLiteResponseStore) -> None:
    conversations = SQLiteConversationStore(db)
    await conversations.create_conversation("conv_a", 1, {}, [], tenant=A)
    await db.save_response(response("resp_b"), [message("in_b")], tenant=B, conversation_id="conv_a")
    assert await conversations.load_items("conv_a", tenant=A) == []
    await db.save_response(response("resp_a"), [message("in_a")], tenant=A, conversation_id="conv_a")
    assert [item["id"] for item in await conversations.load_items("conv_a", tenant=A) or []] == ["in_a",
                                                                                                "out_resp_a"]


# -- events of background responses ------------------------------------------------------------------------------


async def test_events_are_reached_only_through_the_tenants_response(db: SQLiteResponseStore) -> None:
    log = SQLiteEventLog(db)
    await db.save_response(response("resp_bg", status="in_progress", background=True), [], tenant=A)
    await log.append("resp_bg", [(0, b"zero"), (1, b"one")], tenant=A)
    await log.append("resp_bg", [(2, b"forged")], tenant=B)  # another tenant's response: nothing stored
    assert await log.after("resp_bg", -1, tenant=B) == []
    assert await log.after("resp_bg", -1, tenant=A) == [(0, b"zero"), (1, b"one")]

    await log.truncate("resp_bg", 0, tenant=B)
    assert len(await log.after("resp_bg", -1, tenant=A)) == 2

    ended = dict(response("resp_bg", background=True), status="cancelled")
    await log.end_response(ended, lambda n: f"end {n}".encode(), tenant=B)
    assert (await db.get_response("resp_bg", tenant=A))["status"] == "in_progress"
    assert len(await log.after("resp_bg", -1, tenant=A)) == 2

    assert await log.unfinished() == [(A, (await db.get_response("resp_bg", tenant=A)))]
    await log.end_response(ended, lambda n: f"end {n}".encode(), tenant=A)
    assert (await log.after("resp_bg", 1, tenant=A)) == [(2, b"end 2")]
    assert await log.unfinished() == []


# -- conversations -----------------------------------------------------------------------------------------------


async def test_conversations_and_their_items_are_invisible_to_another_tenant(db: SQLiteResponseStore) -> None:
    store = SQLiteConversationStore(db)
    await store.create_conversation("conv_a", 10, {"k": "a"}, [message("item_1"), message("item_2")], tenant=A)
    await store.create_conversation("conv_b", 11, {"k": "b"}, [message("item_3")], tenant=B)

    assert (await store.get_conversation("conv_a", tenant=A)).metadata == {"k": "a"}  # type: ignore[union-attr]
    assert await store.get_conversation("conv_a", tenant=B) is None
    assert [c.id for c in (await store.list_conversations(tenant=A)).data] == ["conv_a"]
    assert [c.id for c in (await store.list_conversations(tenant=B)).data] == ["conv_b"]
    with pytest.raises(InvalidCursor):
        await store.list_conversations(tenant=B, after="conv_a")

    assert await store.load_items("conv_a", tenant=B) is None
    assert await store.list_items("conv_a", tenant=B) is None
    with pytest.raises(InvalidCursor):  # an item of another tenant's conversation is no cursor
        await store.list_items("conv_b", tenant=B, after="item_1")
    assert await store.get_item("conv_a", "item_1", tenant=B) is None
    assert await store.get_item("conv_a", "item_1", tenant=A) == message("item_1")

    assert await store.update_conversation("conv_a", {"k": "stolen"}, tenant=B) is None
    assert not await store.append_items("conv_a", [message("item_x")], tenant=B)
    assert not await store.append_items("conv_a", [], tenant=B)
    assert not await store.delete_item("conv_a", "item_1", tenant=B)
    assert not await store.delete_conversation("conv_a", tenant=B)

    conversation = await store.get_conversation("conv_a", tenant=A)
    assert conversation is not None and conversation.metadata == {"k": "a"}
    assert [item["id"] for item in await store.load_items("conv_a", tenant=A) or []] == ["item_1", "item_2"]

    assert await store.delete_item("conv_a", "item_1", tenant=A)
    assert await store.delete_conversation("conv_a", tenant=A)
    assert await store.get_conversation("conv_a", tenant=A) is None


# -- prompts -----------------------------------------------------------------------------------------------------


async def test_prompts_and_their_versions_are_invisible_to_another_tenant(db: SQLiteResponseStore) -> None:
    store = SQLitePromptStore(db)
    await store.create_prompt("pmpt_a", 1, {"instructions": "a1"}, tenant=A)
    await store.create_prompt("pmpt_b", 2, {"instructions": "b1"}, tenant=B)

    assert await store.get_prompt("pmpt_a", tenant=B) is None
    assert await store.get_prompt("pmpt_a", 1, tenant=B) is None
    assert await store.list_versions("pmpt_a", tenant=B) is None
    assert [p.id for p in (await store.list_prompts(tenant=A))[0]] == ["pmpt_a"]
    assert [p.id for p in (await store.list_prompts(tenant=B))[0]] == ["pmpt_b"]
    assert (await store.list_prompts(tenant=B, after="pmpt_a"))[0] == []  # another tenant's cursor finds nothing

    assert await store.add_version("pmpt_a", 3, {"instructions": "forged"}, tenant=B) is None
    assert await store.set_default_version("pmpt_a", 1, tenant=B) is None
    assert not await store.delete_prompt("pmpt_a", tenant=B)

    own = await store.get_prompt("pmpt_a", tenant=A)
    assert own is not None and own.latest_version == 1 and own.body == {"instructions": "a1"}
    added = await store.add_version("pmpt_a", 4, {"instructions": "a2"}, tenant=A)
    assert added is not None and added.version == 2
    assert await store.set_default_version("pmpt_a", 1, tenant=A) is not None
    assert [v.version for v in await store.list_versions("pmpt_a", tenant=A) or []] == [1, 2]
    assert await store.delete_prompt("pmpt_a", tenant=A)


# -- migration 10 ------------------------------------------------------------------------------------------------


async def test_rows_stored_before_tenancy_belong_to_the_default_tenant(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        before = [m for m in MIGRATIONS if m[0] < 10]
        assert await migrate(conn, before) == before[-1][0]
        old = response("resp_old", metadata={"k": "v"})
        await conn.execute("INSERT INTO responses (id, created_at, status, model, response) VALUES (?, ?, ?, ?, ?)",
                           (old["id"], old["created_at"], old["status"], old["model"], orjson.dumps(old)))
        await conn.execute("INSERT INTO response_metadata (response_id, key, value, created_at) "
                           "VALUES ('resp_old', 'k', 'v', ?)", (old["created_at"],))
        await conn.execute("INSERT INTO conversations (id, created_at, metadata) VALUES ('conv_old', 7, '{}')")
        await conn.execute("INSERT INTO prompt_writes (id, created_at, body) VALUES ('pmpt_old', 8, '{}')")
    async with SQLiteResponseStore(str(path)) as db:
        assert await db.get_response("resp_old", tenant=DEFAULT_TENANT) == old
        assert await db.get_response("resp_old", tenant=A) is None
        found = await db.list_responses(tenant=DEFAULT_TENANT, where=ResponseFilter(metadata=(("k", "v"),)))
        assert found.ids == ["resp_old"]
        conversations = SQLiteConversationStore(db)
        assert (await conversations.get_conversation("conv_old", tenant=DEFAULT_TENANT)) is not None
        assert (await conversations.get_conversation("conv_old", tenant=A)) is None
        prompts = SQLitePromptStore(db)
        assert await prompts.get_prompt("pmpt_old", tenant=DEFAULT_TENANT) is not None
        assert await prompts.get_prompt("pmpt_old", tenant=A) is None
        assert await db.response_tenants() == [DEFAULT_TENANT]
