"""The response store against real SQLite files (and one in-memory database)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import platformdirs
import pytest

from responses_bridge.store import (
    LATEST_VERSION,
    MIGRATIONS,
    InvalidCursor,
    InvalidPageArgs,
    ItemPage,
    ResponseStore,
    SQLiteResponseStore,
    default_db_path,
    migrate,
)
from responses_bridge.store.base import DEFAULT_TENANT

# -- builders --------------------------------------------------------------------------------------------------


def user_item(item_id: str, text: str | None = None) -> dict:
    return {
        "id": item_id,
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text or f"text of {item_id}"}],
    }


def assistant_item(item_id: str) -> dict:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": f"answer {item_id} – ünïcødé ✓", "annotations": []}],
    }


def make_response(
    response_id: str,
    *,
    previous: str | None = None,
    status: str = "completed",
    output: list[dict] | None = None,
    instructions: str | None = "Be terse.",
) -> dict:
    """A Response object with every field a client sees, so the round trip is checked on realistic data."""
    if output is None:
        output = [assistant_item(f"msg_{response_id}")]
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": instructions,
        "max_output_tokens": None,
        "model": "gpt-test",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": previous,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 0.7,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [
            {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}, "strict": True}
        ],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": 12,
            "output_tokens": 3,
            "total_tokens": 15,
            "input_tokens_details": {"cached_tokens": 0},
        },
        "user": None,
        "metadata": {"k": "v"},
    }


async def save_chain(store: SQLiteResponseStore, length: int, prefix: str = "resp") -> list[str]:
    """Save a linear chain; turn n has input ``in_n`` and output ``msg_<id>``."""
    ids: list[str] = []
    previous = None
    for n in range(length):
        response_id = f"{prefix}_{n}"
        await store.save_response(make_response(response_id, previous=previous), [user_item(f"in_{prefix}_{n}")],
                                  tenant=DEFAULT_TENANT)
        ids.append(response_id)
        previous = response_id
    return ids


def ids_of(items: list[dict]) -> list[str]:
    return [item["id"] for item in items]


def raw(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection to look at the file from outside the store."""
    return sqlite3.connect(path)


# -- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    # A nested, not yet existing directory: open() must create it.
    return tmp_path / "data" / "nested" / "responses.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteResponseStore]:
    s = SQLiteResponseStore(str(db_path))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


# -- basics ----------------------------------------------------------------------------------------------------


async def test_satisfies_protocol(store: SQLiteResponseStore) -> None:
    assert isinstance(store, ResponseStore)


async def test_save_get_roundtrip_is_exact(store: SQLiteResponseStore) -> None:
    response = make_response("resp_a")
    await store.save_response(response, [user_item("in_1")], tenant=DEFAULT_TENANT)
    assert await store.get_response("resp_a", tenant=DEFAULT_TENANT) == response
    assert await store.get_response("resp_unknown", tenant=DEFAULT_TENANT) is None


async def test_file_is_created_in_wal_mode(store: SQLiteResponseStore, db_path: Path) -> None:
    assert db_path.exists()
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION


async def test_update_in_place(store: SQLiteResponseStore, db_path: Path) -> None:
    pending = make_response("resp_u", status="in_progress", output=[])
    await store.save_response(pending, [user_item("in_1")], tenant=DEFAULT_TENANT)
    assert (await store.get_response("resp_u", tenant=DEFAULT_TENANT))["status"] == "in_progress"
    assert await store.load_history("resp_u", tenant=DEFAULT_TENANT) == [user_item("in_1")]

    done = make_response("resp_u", status="completed")
    await store.save_response(done, [user_item("in_1"), user_item("in_2")], tenant=DEFAULT_TENANT)

    assert await store.get_response("resp_u", tenant=DEFAULT_TENANT) == done
    assert ids_of(await store.load_history("resp_u", tenant=DEFAULT_TENANT)) == ["in_1", "in_2", "msg_resp_u"]
    with raw(db_path) as conn:
        assert conn.execute("SELECT count(*), max(status) FROM responses").fetchone() == (1, "completed")
        assert conn.execute("SELECT count(*) FROM response_items").fetchone()[0] == 3


async def test_delete_cascades_to_items(store: SQLiteResponseStore, db_path: Path) -> None:
    await store.save_response(make_response("resp_keep"), [user_item("in_k")], tenant=DEFAULT_TENANT)
    await store.save_response(make_response("resp_del"), [user_item("in_d1"), user_item("in_d2")],
                              tenant=DEFAULT_TENANT)

    assert await store.delete_response("resp_del", tenant=DEFAULT_TENANT) is True
    assert await store.delete_response("resp_del", tenant=DEFAULT_TENANT) is False
    assert await store.delete_response("resp_never", tenant=DEFAULT_TENANT) is False

    assert await store.get_response("resp_del", tenant=DEFAULT_TENANT) is None
    assert await store.list_input_items("resp_del", tenant=DEFAULT_TENANT) is None
    assert await store.load_history("resp_del", tenant=DEFAULT_TENANT) is None
    with raw(db_path) as conn:
        rows = conn.execute("SELECT response_id, count(*) FROM response_items GROUP BY response_id").fetchall()
    assert rows == [("resp_keep", 2)]  # one input, one output


async def test_calls_before_open_fail_clearly(tmp_path: Path) -> None:
    s = SQLiteResponseStore(str(tmp_path / "x.db"))
    with pytest.raises(RuntimeError, match="not open"):
        await s.get_response("resp", tenant=DEFAULT_TENANT)


async def test_memory_database(tmp_path: Path) -> None:
    async with SQLiteResponseStore(":memory:") as s:
        ids = await save_chain(s, 3)
        first = make_response(ids[0])
        assert await s.get_response(ids[0], tenant=DEFAULT_TENANT) == first
        assert ids_of(await s.load_history(ids[-1], tenant=DEFAULT_TENANT)) == [
            "in_resp_0", "msg_resp_0", "in_resp_1", "msg_resp_1", "in_resp_2", "msg_resp_2",
        ]
        page = await s.list_input_items(ids[1], tenant=DEFAULT_TENANT)
        only = user_item("in_resp_1")
        assert page == ItemPage(data=[only], first_id="in_resp_1", last_id="in_resp_1", has_more=False)
        await asyncio.gather(*(s.save_response(make_response(f"m_{n}"), [user_item(f"i_{n}")],
                                               tenant=DEFAULT_TENANT) for n in range(50)))
        assert all([await s.get_response(f"m_{n}", tenant=DEFAULT_TENANT) is not None for n in range(50)])
        assert await s.delete_response(ids[1], tenant=DEFAULT_TENANT) is True
        assert ids_of(await s.load_history(ids[-1], tenant=DEFAULT_TENANT)) == ["in_resp_2", "msg_resp_2"]
    assert not list(tmp_path.iterdir())  # nothing touched the disk


def test_default_db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "user-data" / "responses-bridge"
    seen: list[str] = []

    def fake_user_data_dir(appname: str, *args: object, **kwargs: object) -> str:
        seen.append(appname)
        return str(target)

    monkeypatch.setattr(platformdirs, "user_data_dir", fake_user_data_dir)
    path = default_db_path()
    assert seen == ["responses-bridge"]
    assert Path(path) == target / "responses-bridge.db"
    assert target.is_dir()


# -- input_items pagination ------------------------------------------------------------------------------------

SEVEN = [f"in_{n}" for n in range(7)]


@pytest.fixture
async def paged(store: SQLiteResponseStore) -> SQLiteResponseStore:
    await store.save_response(make_response("resp_p"), [user_item(i) for i in SEVEN], tenant=DEFAULT_TENANT)
    return store


@pytest.mark.parametrize(
    ("kwargs", "expected", "has_more"),
    [
        ({}, SEVEN[::-1], False),  # default: desc, limit 20
        ({"order": "asc"}, SEVEN, False),
        ({"order": "asc", "limit": 3}, ["in_0", "in_1", "in_2"], True),
        ({"order": "asc", "limit": 3, "after": "in_2"}, ["in_3", "in_4", "in_5"], True),
        ({"order": "asc", "limit": 3, "after": "in_5"}, ["in_6"], False),
        ({"order": "asc", "after": "in_6"}, [], False),
        ({"order": "desc", "limit": 3}, ["in_6", "in_5", "in_4"], True),
        ({"order": "desc", "limit": 3, "after": "in_4"}, ["in_3", "in_2", "in_1"], True),
        ({"order": "desc", "limit": 3, "after": "in_1"}, ["in_0"], False),
        ({"order": "desc", "limit": 3, "after": "in_0"}, [], False),
        # `before` alone gives the page right before the cursor; has_more says whether more lie further back.
        ({"order": "asc", "limit": 2, "before": "in_5"}, ["in_3", "in_4"], True),
        ({"order": "asc", "limit": 5, "before": "in_2"}, ["in_0", "in_1"], False),
        ({"order": "desc", "limit": 2, "before": "in_1"}, ["in_3", "in_2"], True),
        ({"order": "desc", "limit": 2, "before": "in_4"}, ["in_6", "in_5"], False),
        ({"order": "desc", "before": "in_6"}, [], False),
        # both cursors: the window between them, from the `after` side.
        ({"order": "asc", "limit": 2, "after": "in_1", "before": "in_5"}, ["in_2", "in_3"], True),
        ({"order": "asc", "limit": 3, "after": "in_1", "before": "in_5"}, ["in_2", "in_3", "in_4"], False),
        ({"order": "desc", "after": "in_5", "before": "in_1"}, ["in_4", "in_3", "in_2"], False),
        ({"order": "desc", "limit": 1, "after": "in_5", "before": "in_1"}, ["in_4"], True),
    ],
)
async def test_input_items_pages(
    paged: SQLiteResponseStore, kwargs: dict, expected: list[str], has_more: bool
) -> None:
    page = await paged.list_input_items("resp_p", **kwargs, tenant=DEFAULT_TENANT)
    assert page is not None
    assert ids_of(page.data) == expected
    assert page.has_more is has_more
    assert page.first_id == (expected[0] if expected else None)
    assert page.last_id == (expected[-1] if expected else None)
    assert page.data == [user_item(i) for i in expected]  # items come back whole, not just ids


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_input_items_full_walk_with_after(paged: SQLiteResponseStore, order: str) -> None:
    seen: list[str] = []
    after = None
    while True:
        page = await paged.list_input_items("resp_p", order=order, limit=2, after=after, tenant=DEFAULT_TENANT)
        seen += ids_of(page.data)
        if not page.has_more:
            break
        after = page.last_id
    assert seen == (SEVEN if order == "asc" else SEVEN[::-1])


async def test_input_items_excludes_output(paged: SQLiteResponseStore) -> None:
    page = await paged.list_input_items("resp_p", limit=100, tenant=DEFAULT_TENANT)
    assert "msg_resp_p" not in ids_of(page.data)


async def test_input_items_of_response_without_input(store: SQLiteResponseStore) -> None:
    await store.save_response(make_response("resp_empty"), [], tenant=DEFAULT_TENANT)
    empty = await store.list_input_items("resp_empty", tenant=DEFAULT_TENANT)
    assert empty == ItemPage(data=[], first_id=None, last_id=None, has_more=False)
    assert await store.list_input_items("resp_unknown", tenant=DEFAULT_TENANT) is None


@pytest.mark.parametrize("param", ["after", "before"])
async def test_unknown_cursor_is_refused(paged: SQLiteResponseStore, param: str) -> None:
    with pytest.raises(InvalidCursor) as info:
        await paged.list_input_items("resp_p", **{param: "in_nope"}, tenant=DEFAULT_TENANT)
    assert (info.value.param, info.value.value) == (param, "in_nope")
    # An output item id is not an input-item cursor either.
    with pytest.raises(InvalidCursor):
        await paged.list_input_items("resp_p", **{param: "msg_resp_p"}, tenant=DEFAULT_TENANT)


@pytest.mark.parametrize(
    ("kwargs", "param"), [({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"order": "up"}, "order")]
)
async def test_bad_page_arguments_are_refused(paged: SQLiteResponseStore, kwargs: dict, param: str) -> None:
    with pytest.raises(InvalidPageArgs) as info:
        await paged.list_input_items("resp_p", **kwargs, tenant=DEFAULT_TENANT)
    assert info.value.param == param


# -- history ---------------------------------------------------------------------------------------------------


async def test_history_of_three_turns(store: SQLiteResponseStore) -> None:
    await store.save_response(make_response("r1", instructions="SYSTEM ONE"), [user_item("u1")], tenant=DEFAULT_TENANT)
    await store.save_response(
        make_response("r2", previous="r1", output=[assistant_item("a2"), assistant_item("a2b")]), [user_item("u2")]
    , tenant=DEFAULT_TENANT)
    await store.save_response(make_response("r3", previous="r2"), [user_item("u3"), user_item("u3b")],
                              tenant=DEFAULT_TENANT)

    history = await store.load_history("r3", tenant=DEFAULT_TENANT)
    assert ids_of(history) == ["u1", "msg_r1", "u2", "a2", "a2b", "u3", "u3b", "msg_r3"]
    assert history[0] == user_item("u1") and history[1] == assistant_item("msg_r1")
    assert "SYSTEM ONE" not in repr(history)  # instructions belong to their turn only
    assert ids_of(await store.load_history("r2", tenant=DEFAULT_TENANT)) == ["u1", "msg_r1", "u2", "a2", "a2b"]
    assert ids_of(await store.load_history("r1", tenant=DEFAULT_TENANT)) == ["u1", "msg_r1"]
    assert await store.load_history("r_unknown", tenant=DEFAULT_TENANT) is None


async def test_history_of_response_without_items_is_empty_not_none(store: SQLiteResponseStore) -> None:
    await store.save_response(make_response("r_bare", output=[]), [], tenant=DEFAULT_TENANT)
    assert await store.load_history("r_bare", tenant=DEFAULT_TENANT) == []


async def test_history_of_long_chain_is_one_statement(store: SQLiteResponseStore) -> None:
    ids = await save_chain(store, 120)
    statements: list[str] = []
    reader = store._reader  # the connection load_history reads through
    assert reader is not None
    await reader.set_trace_callback(statements.append)
    try:
        history = await store.load_history(ids[-1], tenant=DEFAULT_TENANT)
    finally:
        await reader.set_trace_callback(None)

    assert len(statements) == 1, statements
    assert "WITH RECURSIVE" in statements[0]
    expected = [i for n in range(120) for i in (f"in_resp_{n}", f"msg_resp_{n}")]
    assert ids_of(history) == expected


async def test_deleted_middle_link_cuts_history(store: SQLiteResponseStore) -> None:
    ids = await save_chain(store, 4)
    assert await store.delete_response(ids[1], tenant=DEFAULT_TENANT)
    assert ids_of(await store.load_history(ids[3], tenant=DEFAULT_TENANT)) == [
        "in_resp_2", "msg_resp_2", "in_resp_3", "msg_resp_3"]
    assert ids_of(await store.load_history(ids[2], tenant=DEFAULT_TENANT)) == ["in_resp_2", "msg_resp_2"]
    assert ids_of(await store.load_history(ids[0], tenant=DEFAULT_TENANT)) == ["in_resp_0", "msg_resp_0"]
    assert await store.load_history(ids[1], tenant=DEFAULT_TENANT) is None


async def test_chain_to_never_stored_parent(store: SQLiteResponseStore) -> None:
    await store.save_response(make_response("orphan", previous="resp_elsewhere"), [user_item("u")],
                              tenant=DEFAULT_TENANT)
    assert ids_of(await store.load_history("orphan", tenant=DEFAULT_TENANT)) == ["u", "msg_orphan"]


# -- persistence and migrations ----------------------------------------------------------------------------------


async def test_persists_across_reopen(db_path: Path) -> None:
    async with SQLiteResponseStore(str(db_path)) as first:
        ids = await save_chain(first, 3)
    async with SQLiteResponseStore(str(db_path)) as second:
        assert await second.get_response(ids[2], tenant=DEFAULT_TENANT) == make_response(ids[2], previous=ids[1])
        assert len(await second.load_history(ids[2], tenant=DEFAULT_TENANT)) == 6
        assert ids_of((await second.list_input_items(ids[0], tenant=DEFAULT_TENANT)).data) == ["in_resp_0"]


@pytest.mark.parametrize("kind", ["zero-byte file", "sqlite file at user_version 0"])
async def test_migrates_version_zero_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "old.db"
    if kind == "zero-byte file":
        path.touch()
    else:
        with raw(path) as conn:
            conn.execute("CREATE TABLE unrelated (x)")  # a real database, but no schema of ours yet
    async with SQLiteResponseStore(str(path)) as s:
        await s.save_response(make_response("r"), [user_item("u")], tenant=DEFAULT_TENANT)
        assert (await s.get_response("r", tenant=DEFAULT_TENANT))["id"] == "r"
    with raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"responses", "response_items"} <= tables
    assert {"responses_listed", "response_items_order", "response_items_by_item"} <= indexes
    assert "responses_previous_response_id" not in indexes  # read by nothing, written by every save (migration 38)


async def test_refuses_database_from_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with raw(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    s = SQLiteResponseStore(str(path))
    with pytest.raises(RuntimeError) as info:
        await s.open()
    assert "99" in str(info.value) and str(LATEST_VERSION) in str(info.value)
    with pytest.raises(RuntimeError, match="not open"):
        await s.get_response("r", tenant=DEFAULT_TENANT)
    with raw(path) as conn:  # left exactly as found
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


async def test_upgrades_older_schema_in_place(db_path: Path) -> None:
    async with SQLiteResponseStore(str(db_path)) as s:
        await s.save_response(make_response("r"), [user_item("u")], tenant=DEFAULT_TENANT)
    future = [*MIGRATIONS, (LATEST_VERSION + 1, ["ALTER TABLE responses ADD COLUMN note TEXT"])]
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        assert await migrate(conn, future) == LATEST_VERSION + 1
        assert await migrate(conn, future) == LATEST_VERSION + 1  # already there: nothing re-applied
        rows = list(await conn.execute_fetchall("SELECT id, note FROM responses"))
        assert rows == [("r", None)]


async def test_failed_migration_leaves_previous_version(db_path: Path) -> None:
    async with SQLiteResponseStore(str(db_path)) as s:
        await s.save_response(make_response("r"), [user_item("u")], tenant=DEFAULT_TENANT)
    broken = [*MIGRATIONS, (LATEST_VERSION + 1, ["CREATE TABLE half_done (x)", "THIS IS NOT SQL"])]
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        with pytest.raises(sqlite3.OperationalError):
            await migrate(conn, broken)
        assert list(await conn.execute_fetchall("PRAGMA user_version")) == [(LATEST_VERSION,)]
        assert not list(await conn.execute_fetchall("SELECT name FROM sqlite_master WHERE name = 'half_done'"))
    async with SQLiteResponseStore(str(db_path)) as s:
        assert await s.get_response("r", tenant=DEFAULT_TENANT) is not None


# -- concurrency -----------------------------------------------------------------------------------------------


async def test_concurrent_saves_all_land(store: SQLiteResponseStore, db_path: Path) -> None:
    async def save(n: int) -> None:
        await store.save_response(make_response(f"c_{n}"), [user_item(f"ci_{n}_a"), user_item(f"ci_{n}_b")],
                                  tenant=DEFAULT_TENANT)

    async def read(n: int) -> None:
        await store.get_response(f"c_{n}", tenant=DEFAULT_TENANT)

    await asyncio.gather(*(save(n) for n in range(200)), *(read(n) for n in range(0, 200, 5)))

    with raw(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM responses").fetchone()[0] == 200
        assert conn.execute("SELECT count(*) FROM response_items").fetchone()[0] == 600
    for n in (0, 99, 199):
        assert await store.get_response(f"c_{n}", tenant=DEFAULT_TENANT) == make_response(f"c_{n}")
        page = await store.list_input_items(f"c_{n}", order="asc", tenant=DEFAULT_TENANT)
        assert ids_of(page.data) == [f"ci_{n}_a", f"ci_{n}_b"]


async def test_concurrent_updates_of_one_response_stay_consistent(store: SQLiteResponseStore) -> None:
    """Each save replaces the items atomically, so the final items always match the final response row."""
    versions = [
        (make_response("same", status="completed", output=[assistant_item(f"o_{n}")]), [user_item(f"i_{n}")])
        for n in range(50)
    ]
    await asyncio.gather(*(store.save_response(r, items, tenant=DEFAULT_TENANT) for r, items in versions))
    final = await store.get_response("same", tenant=DEFAULT_TENANT)
    n = final["output"][0]["id"].removeprefix("o_")
    assert ids_of(await store.load_history("same", tenant=DEFAULT_TENANT)) == [f"i_{n}", f"o_{n}"]
