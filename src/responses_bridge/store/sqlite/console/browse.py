"""The console's reads on SQLite (store/browsing.py), on a read connection of their own.

A file database gives the console its own connection (its own aiosqlite thread), opened at its first page: a search
running ``LIKE`` over a stretch of stored JSON never holds the read connection that resolves the API's keys and
loads its histories, so another tenant's call does not queue behind it (WAL lets both read at once). SQLite runs
each statement with Python's lock released, so the event loop keeps serving meanwhile. ``":memory:"`` databases
exist per connection: there the console reads on the store's one connection under its lock, as every read does.

``length()`` of a BLOB reads the row's header, not its content: the sizes come before any content is read. A
statement naming ids and a tenant says ``+tenant`` so the planner looks the ids up by primary key: left to itself
(no statistics) it chose the tenant's listing index and read all of the tenant's rows (110 ms on 100,000 for 25).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import aiosqlite

from ... import metrics
from ...browsing import LIKE_ESCAPE, UsageSum, like_pattern, slowest_sql, usage_sum, usage_sums_sql
from ...listing import bound_params, bounds, page_sql, responses_page, trim_page
from ...records import ResponseFilter
from ..cursors import METADATA_JOIN, resolve_keys


class BrowsedFile(Protocol):
    """What the browser needs of its store (responses.py's ``SQLiteResponseStore``): the file, whether it is open,
    its shared read connection (for ``":memory:"``, which exists per connection), and the catch-up of the facts
    table its orders and sums read (response_facts.py)."""

    path: str

    @property
    def is_open(self) -> bool: ...

    def reading(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

    async def catch_up_facts(self) -> None: ...


_CHAIN = """
WITH RECURSIVE chain(id, previous_response_id, size, depth) AS (
    SELECT id, previous_response_id, length(response), 0 FROM responses WHERE id = :id AND tenant = :tenant
    UNION ALL
    SELECT r.id, r.previous_response_id, length(r.response), chain.depth + 1
    FROM chain JOIN responses AS r ON r.id = chain.previous_response_id AND r.tenant = :tenant
    WHERE chain.depth < :depth
)
SELECT id, previous_response_id, size FROM chain ORDER BY depth
"""
_OWNED = "response_id IN (SELECT id FROM responses WHERE id = :id AND tenant = :tenant)"
_ITEM_SIZES = ("SELECT position, length(item) FROM response_items WHERE response_id = :id AND kind = :kind "
               f"AND position >= :start AND {_OWNED} ORDER BY position LIMIT :limit")
_INPUT_BYTES = (" + coalesce((SELECT sum(length(i.item)) FROM response_items AS i "
                "WHERE i.response_id = r.id AND i.kind = 'input'), 0)")
_IN_INPUT = ("EXISTS (SELECT 1 FROM response_items AS i WHERE i.response_id = responses.id AND i.kind = 'input' "
             f"AND CAST(i.item AS TEXT) LIKE ? ESCAPE '{LIKE_ESCAPE}')")
_USAGE_SUMS = usage_sums_sql("response_facts")  # the facts table's usage index (response_facts.py)
_EXISTS = "SELECT EXISTS (SELECT 1 FROM responses WHERE id = :id AND tenant = :tenant)"


class SQLiteResponseBrowser:
    """:class:`~responses_bridge.store.browsing.ResponseBrowser` on a :class:`SQLiteResponseStore`'s file."""

    def __init__(self, store: BrowsedFile) -> None:
        self._store = store
        self._conn: aiosqlite.Connection | None = None
        self._opening = asyncio.Lock()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    @contextlib.asynccontextmanager
    async def _reading(self, operation: str) -> AsyncIterator[aiosqlite.Connection]:
        if self._store.path == ":memory:":
            async with self._store.reading() as shared:
                yield shared
            return
        conn = await self._connection()
        with metrics.timed(operation):
            yield conn

    async def _connection(self) -> aiosqlite.Connection:
        if not self._store.is_open:
            raise RuntimeError("SQLiteResponseStore is not open; await open() first")
        async with self._opening:
            if self._conn is None:
                conn = await aiosqlite.connect(self._store.path, isolation_level=None)
                try:
                    await conn.execute("PRAGMA busy_timeout = 5000")
                    await conn.execute("PRAGMA query_only = ON")
                except BaseException:
                    await conn.close()
                    raise
                self._conn = conn
            return self._conn

    async def response_sizes(self, *, tenant: str, after: str | None, where: ResponseFilter, limit: int,
                             before: str | None = None, inputs: bool = False) -> tuple[list[tuple[str, int]], bool]:
        async with self._reading("browse_sizes") as conn:
            after_key, before_key = await resolve_keys(conn, "responses", after, before, tenant)
            page = bounds(False, after_key, before_key, after_given=after is not None,
                          before_given=before is not None)
            sql, params = responses_page(tenant, where, page, limit + 1, metadata_join=METADATA_JOIN,
                                         select=f"r.id, length(r.response){_INPUT_BYTES if inputs else ''}")
            rows = [(str(row[0]), int(row[1])) for row in await conn.execute_fetchall(sql, params)]
        return rows, trim_page(rows, limit, backward=page.backward)

    async def slowest_sizes(self, *, tenant: str, where: ResponseFilter, by: str, offset: int,
                            limit: int) -> tuple[list[tuple[str, int]], bool]:
        tail, params = slowest_sql(where, by, sorted_by="f")
        params.update(tenant=tenant, fetch=limit + 1, skip=offset)
        await self._store.catch_up_facts()  # every response stored before the page was asked for is in the order
        async with self._reading("browse_sorted") as conn:
            rows = [(str(row[0]), int(row[1])) for row in await conn.execute_fetchall(
                "SELECT r.id, length(r.response) FROM response_facts AS f "
                f"JOIN responses AS r ON r.rowid = f.rowid AND r.id = f.id {tail}", params)]
        return rows, trim_page(rows, limit)

    async def usage_sums(self, *, tenant: str, since_hour: int) -> list[UsageSum]:
        await self._store.catch_up_facts()  # every response stored before the page was asked for is summed
        async with self._reading("browse_usage") as conn:
            rows = await conn.execute_fetchall(_USAGE_SUMS, {"tenant": tenant, "since_hour": since_hour})
        return [usage_sum(row) for row in rows]

    async def response_times(self, response_ids: Sequence[str], *,
                             tenant: str) -> dict[str, tuple[float | None, float | None]]:
        if not response_ids:
            return {}
        marks = ", ".join("?" for _ in response_ids)
        async with self._reading("browse_times") as conn:
            rows = await conn.execute_fetchall(f"SELECT id, ttft_ms, latency_ms FROM responses WHERE +tenant = ? "
                                               f"AND id IN ({marks})", (tenant, *response_ids))
        return {str(row[0]): (row[1], row[2]) for row in rows}

    async def chat_sizes(self, *, tenant: str, after: str | None, limit: int) -> tuple[list[tuple[str, int]], bool]:
        async with self._reading("browse_chat_sizes") as conn:
            after_key, _ = await resolve_keys(conn, "chat_completions", after, None, tenant)
            page = bounds(False, after_key, None, after_given=after is not None, before_given=False)
            params = {**bound_params(page, limit + 1), "tenant": tenant}
            sql = page_sql("id, length(completion) + length(messages)", "chat_completions", ("created_at", "id"),
                           ["tenant = :tenant"], page)
            rows = [(str(row[0]), int(row[1])) for row in await conn.execute_fetchall(sql, params)]
        return rows, trim_page(rows, limit)

    async def chats_containing(self, completion_ids: Sequence[str], needle: str, *, tenant: str) -> set[str]:
        if not completion_ids:
            return set()
        marks = ", ".join("?" for _ in completion_ids)
        sql = (f"SELECT id FROM chat_completions WHERE tenant = ? AND id IN ({marks}) AND "
               f"(CAST(messages AS TEXT) LIKE ? ESCAPE '{LIKE_ESCAPE}' OR "
               f"CAST(completion AS TEXT) LIKE ? ESCAPE '{LIKE_ESCAPE}')")
        pattern = like_pattern(needle)
        async with self._reading("browse_chat_search") as conn:
            rows = await conn.execute_fetchall(sql, (tenant, *completion_ids, pattern, pattern))
        return {str(row[0]) for row in rows}

    async def count_responses(self, *, tenant: str, where: ResponseFilter, cap: int) -> int:
        page = bounds(False, None, None, after_given=False, before_given=False)
        sql, params = responses_page(tenant, where, page, cap + 1, metadata_join=METADATA_JOIN, select="1")
        async with self._reading("browse_count") as conn:
            rows = list(await conn.execute_fetchall(f"SELECT count(*) FROM ({sql})", params))
        return int(rows[0][0])

    async def responses_containing(self, response_ids: Sequence[str], needles: Sequence[str], *,
                                   tenant: str, inputs: Sequence[str] = ()) -> set[str]:
        if not response_ids:
            return set()
        marks = ", ".join("?" for _ in response_ids)
        # LIKE ignores the case of ASCII letters, and runs faster here than instr() (~300 MB/s on one core)
        tests, patterns = "", []
        for needle in needles:
            if needle in inputs:
                tests += f" AND (CAST(response AS TEXT) LIKE ? ESCAPE '{LIKE_ESCAPE}' OR {_IN_INPUT})"
                patterns += [like_pattern(needle)] * 2
            else:
                tests += f" AND CAST(response AS TEXT) LIKE ? ESCAPE '{LIKE_ESCAPE}'"
                patterns.append(like_pattern(needle))
        sql = f"SELECT id FROM responses WHERE +tenant = ? AND id IN ({marks}){tests}"
        async with self._reading("browse_search") as conn:
            rows = await conn.execute_fetchall(sql, (tenant, *response_ids, *patterns))
        return {str(row[0]) for row in rows}

    async def response_json(self, response_id: str, *, tenant: str) -> bytes | None:
        async with self._reading("browse_get") as conn:
            rows = list(await conn.execute_fetchall("SELECT response FROM responses WHERE id = ? AND tenant = ?",
                                                    (response_id, tenant)))
        return rows[0][0] if rows else None  # the row's own bytes: never copied

    async def response_timing(self, response_id: str, *, tenant: str) -> bytes | None:
        async with self._reading("browse_timing") as conn:
            rows = list(await conn.execute_fetchall("SELECT timing FROM responses WHERE id = ? AND tenant = ?",
                                                    (response_id, tenant)))
        return rows[0][0] if rows else None

    async def responses_json(self, response_ids: Sequence[str], *, tenant: str) -> list[tuple[str, bytes]]:
        if not response_ids:
            return []
        marks = ", ".join("?" for _ in response_ids)
        async with self._reading("browse_get") as conn:
            rows = await conn.execute_fetchall(
                f"SELECT id, response FROM responses WHERE +tenant = ? AND id IN ({marks})", (tenant, *response_ids))
        return [(str(row[0]), row[1]) for row in rows]

    async def response_chain(self, response_id: str, *, tenant: str,
                             depth: int) -> list[tuple[str, str | None, int]]:
        async with self._reading("browse_chain") as conn:
            rows = await conn.execute_fetchall(_CHAIN, {"id": response_id, "tenant": tenant, "depth": depth})
        return [(str(row[0]), row[1], int(row[2])) for row in rows]

    async def item_sizes(self, response_id: str, kind: str, *, tenant: str, start: int,
                         limit: int) -> list[tuple[int, int]] | None:
        params = {"id": response_id, "tenant": tenant, "kind": kind, "start": start, "limit": limit}
        async with self._reading("browse_item_sizes") as conn:
            rows = [(int(row[0]), int(row[1])) for row in await conn.execute_fetchall(_ITEM_SIZES, params)]
            if not rows and not next(iter(await conn.execute_fetchall(_EXISTS, params)))[0]:
                return None
        return rows

    async def items_json(self, response_id: str, kind: str, positions: Sequence[int], *,
                         tenant: str) -> list[tuple[int, bytes]]:
        if not positions:
            return []
        marks = ", ".join("?" for _ in positions)
        sql = (f"SELECT position, item FROM response_items WHERE response_id = ? AND kind = ? "
               f"AND position IN ({marks}) AND response_id IN (SELECT id FROM responses WHERE id = ? AND tenant = ?) "
               "ORDER BY position")
        async with self._reading("browse_items") as conn:
            rows = await conn.execute_fetchall(sql, (response_id, kind, *positions, response_id, tenant))
        return [(int(row[0]), row[1]) for row in rows]
