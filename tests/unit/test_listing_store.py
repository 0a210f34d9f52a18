"""Listing stored responses and conversations (``GET /v1/responses``, ``GET /v1/conversations``) on real SQLite.

Pages are checked against a plain Python model of the list (sort, filter, slice), by hand for each rule and by
hypothesis for many mixes of ties, filters, deletions and cursors; the query plans are checked to be index seeks.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from responses_bridge.store import MIGRATIONS, InvalidCursor, InvalidPageArgs, SQLiteResponseStore, migrate
from responses_bridge.store.base import DEFAULT_TENANT, ConversationStore, ResponseStore
from responses_bridge.store.listing import bounds, responses_page
from responses_bridge.store.records import ResponseFilter
from responses_bridge.store.sqlite.conversations import SQLiteConversationStore
from responses_bridge.store.sqlite.cursors import METADATA_JOIN


def response(response_id: str, created_at: int, *, model: str = "m1", status: str = "completed",
             metadata: dict[str, str] | None = None) -> dict[str, Any]:
    return {"id": response_id, "object": "response", "created_at": created_at, "status": status, "model": model,
            "output": [{"id": f"msg_{response_id}", "type": "message", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": "ünïcødé ✓", "annotations": []}]}],
            "metadata": metadata or {}, "store": True}


@pytest.fixture(params=["file", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLiteResponseStore]:
    path = str(tmp_path / "bridge.db") if request.param == "file" else ":memory:"
    async with SQLiteResponseStore(path) as opened:
        yield opened


async def save_all(store: SQLiteResponseStore, responses: list[dict[str, Any]]) -> None:
    for item in responses:
        await store.save_response(item, [], tenant=DEFAULT_TENANT)


def expected_order(responses: list[dict[str, Any]], order: str = "desc") -> list[str]:
    ordered = sorted(responses, key=lambda r: (r["created_at"], r["id"]), reverse=order == "desc")
    return [r["id"] for r in ordered]


async def walk(store: SQLiteResponseStore, *, limit: int, order: str, where: ResponseFilter | None = None
               ) -> list[str]:
    """Every id, page by page with ``after`` as a client does."""
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await store.list_responses(after=after, limit=limit, order=order, where=where, tenant=DEFAULT_TENANT)
        seen += page.ids
        assert len(page.ids) <= limit
        if not page.has_more:
            return seen
        after = page.ids[-1]


# -- responses ------------------------------------------------------------------------------------------------


async def test_protocols_are_satisfied(store: SQLiteResponseStore) -> None:
    assert isinstance(store, ResponseStore)
    assert isinstance(SQLiteConversationStore(store), ConversationStore)


async def test_order_is_created_at_then_id_and_data_is_the_stored_json(store: SQLiteResponseStore) -> None:
    # same second for b, a, c: the id breaks the tie; z is older, y newer
    responses = [response("resp_b", 200), response("resp_z", 100), response("resp_a", 200),
                 response("resp_y", 300), response("resp_c", 200)]
    await save_all(store, responses)
    page = await store.list_responses(tenant=DEFAULT_TENANT)
    assert page.ids == ["resp_y", "resp_c", "resp_b", "resp_a", "resp_z"] and not page.has_more
    assert [orjson.loads(blob) for blob in page.data] == [await store.get_response(i, tenant=DEFAULT_TENANT)
                                                          for i in page.ids]
    ascending = await store.list_responses(order="asc", tenant=DEFAULT_TENANT)
    assert ascending.ids == page.ids[::-1]


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("limit", [1, 2, 3, 7])
async def test_after_walks_every_response_once(store: SQLiteResponseStore, order: str, limit: int) -> None:
    responses = [response(f"resp_{n:02d}", 1000 + n // 3) for n in range(10)]
    await save_all(store, responses)
    assert await walk(store, limit=limit, order=order) == expected_order(responses, order)


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_before_is_the_previous_page(store: SQLiteResponseStore, order: str) -> None:
    responses = [response(f"resp_{n}", 1000 + n // 2) for n in range(8)]
    await save_all(store, responses)
    full = expected_order(responses, order)
    cursor = full[5]
    page = await store.list_responses(before=cursor, limit=2, order=order, tenant=DEFAULT_TENANT)
    assert page.ids == full[3:5] and page.has_more  # in the requested order; more further back
    first = await store.list_responses(before=full[2], limit=5, order=order, tenant=DEFAULT_TENANT)
    assert first.ids == full[:2] and not first.has_more
    between = await store.list_responses(after=full[1], before=full[6], limit=10, order=order, tenant=DEFAULT_TENANT)
    assert between.ids == full[2:6] and not between.has_more
    capped = await store.list_responses(after=full[1], before=full[6], limit=3, order=order, tenant=DEFAULT_TENANT)
    assert capped.ids == full[2:5] and capped.has_more
    assert (await store.list_responses(after=full[6], before=full[1], order=order, tenant=DEFAULT_TENANT)).ids == []


async def test_filters_model_status_metadata(store: SQLiteResponseStore) -> None:
    responses = [
        response("resp_1", 10, model="m1", status="completed", metadata={"team": "a", "env": "prod"}),
        response("resp_2", 11, model="m2", status="completed", metadata={"team": "a"}),
        response("resp_3", 12, model="m1", status="failed", metadata={"team": "b", "env": "prod"}),
        response("resp_4", 13, model="m1", status="completed", metadata={"team": "a", "env": "dev"}),
        response("resp_5", 14, model="m2", status="in_progress"),
    ]
    await save_all(store, responses)

    async def ids(**where: Any) -> list[str]:
        return await walk(store, limit=2, order="desc", where=ResponseFilter(**where))

    assert await ids(model="m1") == ["resp_4", "resp_3", "resp_1"]
    assert await ids(status="completed") == ["resp_4", "resp_2", "resp_1"]
    assert await ids(model="m1", status="completed") == ["resp_4", "resp_1"]
    assert await ids(metadata=(("team", "a"),)) == ["resp_4", "resp_2", "resp_1"]
    assert await ids(metadata=(("team", "a"), ("env", "prod"))) == ["resp_1"]
    assert await ids(metadata=(("env", "prod"),), model="m1", status="failed") == ["resp_3"]
    assert await ids(metadata=(("team", "c"),)) == []
    assert await ids(model="none") == []
    # a cursor may be any stored response, even one the filter leaves out
    page = await store.list_responses(after="resp_5", where=ResponseFilter(metadata=(("team", "a"),)), limit=1,
                                      tenant=DEFAULT_TENANT)
    assert page.ids == ["resp_4"] and page.has_more


async def test_a_resave_replaces_status_and_metadata_rows(store: SQLiteResponseStore) -> None:
    await store.save_response(response("resp_bg", 5, status="queued", metadata={"k": "v"}), [], tenant=DEFAULT_TENANT)
    assert (await store.list_responses(where=ResponseFilter(status="queued"), tenant=DEFAULT_TENANT)).ids == ["resp_bg"]
    await store.save_response(response("resp_bg", 5, status="completed", metadata={"k": "v"}), [],
                              tenant=DEFAULT_TENANT)
    assert (await store.list_responses(where=ResponseFilter(status="queued"), tenant=DEFAULT_TENANT)).ids == []
    assert (await store.list_responses(where=ResponseFilter(metadata=(("k", "v"),)),
                                       tenant=DEFAULT_TENANT)).ids == ["resp_bg"]
    async with store.reading() as conn:
        rows = list(await conn.execute_fetchall("SELECT count(*) FROM response_metadata"))
    assert rows[0][0] == 1


async def test_deleted_responses_are_never_listed(store: SQLiteResponseStore) -> None:
    responses = [response(f"resp_{n}", 100 + n, metadata={"k": "v"}) for n in range(5)]
    await save_all(store, responses)
    assert await store.delete_response("resp_2", tenant=DEFAULT_TENANT)
    assert await walk(store, limit=2, order="asc") == ["resp_0", "resp_1", "resp_3", "resp_4"]
    filtered = await store.list_responses(where=ResponseFilter(metadata=(("k", "v"),)), tenant=DEFAULT_TENANT)
    assert "resp_2" not in filtered.ids and len(filtered.ids) == 4
    with pytest.raises(InvalidCursor) as info:
        await store.list_responses(after="resp_2", tenant=DEFAULT_TENANT)
    assert info.value.param == "after"
    async with store.reading() as conn:  # its metadata rows went with it
        rows = list(await conn.execute_fetchall("SELECT count(*) FROM response_metadata WHERE response_id = ?",
                                                ("resp_2",)))
    assert rows[0][0] == 0


async def test_bad_arguments(store: SQLiteResponseStore) -> None:
    await save_all(store, [response("resp_1", 1)])
    for kwargs, param in (({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"order": "up"}, "order")):
        with pytest.raises(InvalidPageArgs) as args:
            await store.list_responses(**kwargs, tenant=DEFAULT_TENANT)
        assert args.value.param == param
    for name in ("after", "before"):
        with pytest.raises(InvalidCursor) as cursor:
            await store.list_responses(**{name: "resp_unknown"}, tenant=DEFAULT_TENANT)
        assert cursor.value.param == name
    assert (await store.list_responses(limit=100, tenant=DEFAULT_TENANT)).ids == ["resp_1"]


PLANS = [
    ResponseFilter(),
    ResponseFilter(model="m"),
    ResponseFilter(status="completed"),
    ResponseFilter(model="m", status="completed"),
    ResponseFilter(metadata=(("k", "v"),)),
    ResponseFilter(model="m", metadata=(("k", "v"), ("j", "w"))),
]


@pytest.mark.parametrize("where", PLANS)
@pytest.mark.parametrize("cursor", ["none", "after", "before", "both"])
@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_every_page_is_an_index_seek(store: SQLiteResponseStore, where: ResponseFilter, cursor: str,
                                           order: str) -> None:
    """No full scan and no sort: the page comes from an index in list order, led by the tenant, whichever filter
    drives it."""
    after = (5, "resp_a") if cursor in ("after", "both") else None
    before = (9, "resp_b") if cursor in ("before", "both") else None
    page = bounds(order == "asc", after, before, after_given=after is not None, before_given=before is not None)
    sql, params = responses_page("tenant_a", where, page, 21, metadata_join=METADATA_JOIN)
    async with store.reading() as conn:
        plan = [row[3] for row in await conn.execute_fetchall("EXPLAIN QUERY PLAN " + sql, params)]
    assert not any("TEMP B-TREE" in step for step in plan), plan
    # a SCAN is only the walk of a list-order index from one end, which the LIMIT stops (no cursor, no filter)
    assert all(step.startswith(("SEARCH", "CORRELATED")) for step in plan), plan
    driver = plan[0]
    assert "_listed (tenant=?" in driver, plan  # one tenant's rows only, never another's
    if where.metadata:
        assert "response_metadata_listed (tenant=? AND key=? AND value=?" in driver
    elif where.model is not None or where.status is not None:
        assert "_listed (tenant=? AND model=?" in driver or "_listed (tenant=? AND status=?" in driver


async def test_migration_9_lists_responses_stored_before_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        before_listing = [m for m in MIGRATIONS if m[0] < 9]
        assert await migrate(conn, before_listing) == before_listing[-1][0]
        for item in (response("resp_old1", 1, metadata={"team": "a"}), response("resp_old2", 2),
                     {**response("resp_old3", 3), "metadata": None}):
            await conn.execute("INSERT INTO responses (id, created_at, status, model, response) VALUES (?, ?, ?, ?, ?)",
                               (item["id"], item["created_at"], item["status"], item["model"], orjson.dumps(item)))
    async with SQLiteResponseStore(str(path)) as store:
        assert (await store.list_responses(tenant=DEFAULT_TENANT)).ids == ["resp_old3", "resp_old2", "resp_old1"]
        found = await store.list_responses(where=ResponseFilter(metadata=(("team", "a"),)), tenant=DEFAULT_TENANT)
        assert found.ids == ["resp_old1"]


# -- hypothesis: pages against a model of the list -------------------------------------------------------------

RESPONSES = st.lists(
    st.builds(lambda created, model, status, team: (created, model, status, team),
              st.integers(0, 3), st.sampled_from(["m1", "m2"]), st.sampled_from(["completed", "failed"]),
              st.sampled_from([None, "a", "b"])),
    max_size=12)
FILTERS = st.builds(lambda model, status, team: ResponseFilter(model=model, status=status,
                                                               metadata=(("team", team),) if team else ()),
                    st.sampled_from([None, "m1", "m2"]), st.sampled_from([None, "completed", "failed"]),
                    st.sampled_from([None, "a", "b"]))


def _matches(row: dict[str, Any], where: ResponseFilter) -> bool:
    return ((where.model is None or row["model"] == where.model)
            and (where.status is None or row["status"] == where.status)
            and all(row["metadata"].get(k) == v for k, v in where.metadata))


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=RESPONSES, deleted=st.sets(st.integers(0, 11), max_size=4), where=FILTERS,
       order=st.sampled_from(["asc", "desc"]), limit=st.integers(1, 5),
       after=st.none() | st.integers(0, 11), before=st.none() | st.integers(0, 11))
def test_pages_match_a_model_of_the_list(rows: list[tuple[int, str, str, str | None]], deleted: set[int],
                                         where: ResponseFilter, order: str, limit: int, after: int | None,
                                         before: int | None) -> None:
    responses = [response(f"resp_{n:02d}", created, model=model, status=status,
                          metadata={"team": team} if team else {})
                 for n, (created, model, status, team) in enumerate(rows)]
    kept = [r for n, r in enumerate(responses) if n not in deleted]
    kept_ids = {r["id"] for r in kept}
    after_id = f"resp_{after:02d}" if after is not None else None
    before_id = f"resp_{before:02d}" if before is not None else None

    async def check() -> None:
        async with SQLiteResponseStore(":memory:") as store:
            await save_all(store, responses)
            for n in deleted:
                await store.delete_response(f"resp_{n:02d}", tenant=DEFAULT_TENANT)
            if (after_id is not None and after_id not in kept_ids) or (
                    before_id is not None and before_id not in kept_ids):
                with pytest.raises(InvalidCursor):
                    await store.list_responses(after=after_id, before=before_id, limit=limit, order=order,
                                               where=where, tenant=DEFAULT_TENANT)
                return
            page = await store.list_responses(after=after_id, before=before_id, limit=limit, order=order,
                                              where=where, tenant=DEFAULT_TENANT)
        full = expected_order(kept, order)
        position = {rid: i for i, rid in enumerate(full)}
        wanted = [rid for rid in full if _matches(next(r for r in kept if r["id"] == rid), where)
                  and (after_id is None or position[rid] > position[after_id])
                  and (before_id is None or position[rid] < position[before_id])]
        if before_id is not None and after_id is None:  # the page right before the cursor
            expected, more = wanted[-limit:], len(wanted) > limit
        else:
            expected, more = wanted[:limit], len(wanted) > limit
        assert page.ids == expected and page.has_more == more

    asyncio.run(check())


# -- conversations --------------------------------------------------------------------------------------------


async def test_conversations_list(store: SQLiteResponseStore) -> None:
    conversations = SQLiteConversationStore(store)
    for n, created in enumerate([50, 40, 50, 60, 50]):
        await conversations.create_conversation(f"conv_{n}", created, {"n": str(n)}, [], tenant=DEFAULT_TENANT)
    full = ["conv_3", "conv_4", "conv_2", "conv_0", "conv_1"]
    page = await conversations.list_conversations(limit=2, tenant=DEFAULT_TENANT)
    assert [c.id for c in page.data] == full[:2] and page.has_more
    assert page.data[0].metadata == {"n": "3"} and page.data[0].created_at == 60
    rest = await conversations.list_conversations(after="conv_4", limit=10, tenant=DEFAULT_TENANT)
    assert [c.id for c in rest.data] == full[2:] and not rest.has_more
    back = await conversations.list_conversations(before="conv_0", limit=2, tenant=DEFAULT_TENANT)
    assert [c.id for c in back.data] == full[1:3] and back.has_more
    ascending = await conversations.list_conversations(order="asc", limit=100, tenant=DEFAULT_TENANT)
    assert [c.id for c in ascending.data] == full[::-1]
    assert await conversations.delete_conversation("conv_2", tenant=DEFAULT_TENANT)
    listed = (await conversations.list_conversations(tenant=DEFAULT_TENANT)).data
    assert [c.id for c in listed] == ["conv_3", "conv_4", "conv_0", "conv_1"]
    with pytest.raises(InvalidCursor) as info:
        await conversations.list_conversations(before="conv_2", tenant=DEFAULT_TENANT)
    assert info.value.param == "before"
    with pytest.raises(InvalidPageArgs):
        await conversations.list_conversations(limit=0, tenant=DEFAULT_TENANT)


async def test_conversation_page_is_an_index_seek(store: SQLiteResponseStore) -> None:
    from responses_bridge.store.sqlite.conversations import conversations_page

    page = bounds(False, (5, "conv_a"), None, after_given=True, before_given=False)
    sql, params = conversations_page(page, 3, "tenant_a")
    async with store.reading() as conn:
        plan = [row[3] for row in await conn.execute_fetchall("EXPLAIN QUERY PLAN " + sql, params)]
    assert plan and all(step.startswith("SEARCH") and "conversations_listed (tenant=?" in step for step in plan), plan


def test_sqlite_supports_row_values() -> None:
    # the cursor conditions use row values, in SQLite since 3.15
    assert sqlite3.sqlite_version_info >= (3, 15)
