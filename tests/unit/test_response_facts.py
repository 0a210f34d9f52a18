"""The console's facts table on SQLite (store/sqlite/console/response_facts.py): written behind the saves, never
missing a stored response when a page reads it. A save writes no facts row (the frames it saves); every
``CATCH_UP_EVERY`` saves, or a read, brings the table up to date; a response saved again, deleted (the last one
too, whose rowid SQLite gives again), or renumbered by a ``VACUUM`` leaves the table exact; a database of the
previous version gets the table filled from its rows and loses the indexes it replaced."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.records import ResponseFilter
from responses_bridge.store.sqlite.console.response_facts import CATCH_UP_EVERY
from responses_bridge.store.sqlite.migrations import MIGRATIONS, migrate
from tests.unit.test_console_browsing import answer

A, B = "team-a", "team-b"


def timed(latency_ms: float) -> list[Any]:
    return [3, latency_ms / 10, latency_ms, 0.0, {}, None, None, [], 0]


def facts(path: Path) -> dict[str, tuple[str, float | None, int | None]]:
    """The facts table as it is on disk: id -> (tenant, latency, total tokens)."""
    with sqlite3.connect(path) as conn:
        return {row[0]: (row[1], row[2], row[3])
                for row in conn.execute("SELECT id, tenant, latency_ms, total_tokens FROM response_facts")}


def stored(path: Path) -> dict[str, tuple[str, float | None, int | None]]:
    """What the facts table must hold: the responses' own columns."""
    with sqlite3.connect(path) as conn:
        return {row[0]: (row[1], row[2], row[3])
                for row in conn.execute("SELECT id, tenant, latency_ms, total_tokens FROM responses")}


async def save(store: SQLiteResponseStore, name: str, latency: float, tenant: str = A, **fields: Any) -> None:
    response = answer(name, "x", created=1000)
    response.update(usage={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}, **fields)
    await store.save_response(response, [], tenant=tenant, timing=timed(latency))


async def slowest(store: SQLiteResponseStore, tenant: str = A) -> list[str]:
    sizes, _ = await store.browser.slowest_sizes(tenant=tenant, where=ResponseFilter(), by="latency", offset=0,
                                                 limit=100)
    return [name for name, _ in sizes]


async def test_a_save_writes_no_facts_and_a_read_finds_every_stored_response(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with SQLiteResponseStore(path) as store:
        await save(store, "slow", 900.0)
        await save(store, "fast", 5.0)
        await save(store, "theirs", 50.0, tenant=B)
        assert facts(path) == {}  # behind the saves: not in their transactions
        assert await slowest(store) == ["slow", "fast"]
        assert await slowest(store, B) == ["theirs"]
        assert facts(path) == stored(path)
        sums = await store.browser.usage_sums(tenant=A, since_hour=0)
        assert sum(one.requests for one in sums) == 2 and sum(one.total_tokens for one in sums) == 14


async def test_every_so_many_saves_the_table_catches_up_without_a_read(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with SQLiteResponseStore(path) as store:
        for n in range(CATCH_UP_EVERY):
            await save(store, f"r{n}", float(n))
    # caught up by the writer once the last save's caller was answered; closing waits for the writer
    assert facts(path) == stored(path) and len(facts(path)) == CATCH_UP_EVERY


async def test_rows_left_behind_by_a_process_that_ended_are_caught_up_by_the_next(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with SQLiteResponseStore(path) as store:
        await save(store, "before", 10.0)
    assert facts(path) == {}
    async with SQLiteResponseStore(path) as store:
        assert await slowest(store) == ["before"]


async def test_a_response_saved_again_has_its_facts_replaced(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with SQLiteResponseStore(path) as store:
        await save(store, "run", 1.0, status="queued")
        assert await slowest(store) == ["run"]  # caught up: its row is in the table
        await save(store, "other", 500.0)
        await save(store, "run", 2000.0)  # completed, slower than anything
        assert facts(path)["run"] == (A, 2000.0, 7)  # in the save's own transaction
        assert await slowest(store) == ["run", "other"]


async def test_deleting_the_last_response_lowers_the_mark_for_the_rowid_given_again(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with SQLiteResponseStore(path) as store:
        for name in ("a", "b", "c"):
            await save(store, name, 10.0)
        assert len(await slowest(store)) == 3
        assert await store.delete_response("c", tenant=A)
        assert "c" not in facts(path)
        await save(store, "d", 20.0)  # the rowid "c" had
        with sqlite3.connect(path) as conn:
            rowids = dict(conn.execute("SELECT id, rowid FROM responses").fetchall())
        assert rowids["d"] == 3
        assert await slowest(store) == ["d", "b", "a"]
        assert facts(path) == stored(path)


async def test_rows_numbered_anew_are_caught_up_anew(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with SQLiteResponseStore(path) as store:
        for n in range(6):
            await save(store, f"r{n}", float(n))
        for n in range(3):
            await store.delete_response(f"r{n}", tenant=A)
        assert await slowest(store) == ["r5", "r4", "r3"]
    with sqlite3.connect(path) as conn:  # numbered anew, as SQLite's VACUUM may do to a table without an
        conn.execute("UPDATE responses SET rowid = rowid - 3")  # INTEGER PRIMARY KEY (no delete: no trigger)
        assert conn.execute("SELECT max(rowid) FROM responses").fetchone()[0] == 3
    async with SQLiteResponseStore(path) as store:
        await save(store, "new", 100.0)  # rowid 4: at or below the mark the table was left at
        assert await slowest(store) == ["new", "r5", "r4", "r3"]
        assert facts(path) == stored(path)


async def test_a_database_of_the_previous_version_gets_its_facts_and_loses_the_old_indexes(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await migrate(conn, [m for m in MIGRATIONS if m[0] < 39])
        for n, tenant in enumerate((A, A, B)):
            await conn.execute(
                "INSERT INTO responses (id, created_at, status, model, response, tenant, latency_ms, total_tokens, "
                "usage_hour) VALUES (?, 3600, 'completed', 'm', x'7b7d', ?, ?, 7, 1)", (f"old{n}", tenant, 10.0 * n))
    async with SQLiteResponseStore(path) as store:
        assert facts(path) == stored(path) and len(facts(path)) == 3
        assert await slowest(store) == ["old1", "old0"]
    with sqlite3.connect(path) as conn:
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
    assert not indexes & {"responses_by_latency", "responses_by_ttft", "responses_usage"}
    assert {"response_facts_by_latency", "response_facts_by_ttft", "response_facts_usage"} <= indexes
