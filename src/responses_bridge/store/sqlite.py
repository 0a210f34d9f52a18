"""Embedded response store on SQLite, through aiosqlite so no query ever blocks the event loop.

A file database runs in WAL mode with one write connection and one read connection: readers never wait for a
writer. Every write is a single autocommit statement (a save inserts into a view whose trigger does the rest), so
it is atomic without an explicit transaction, and saves queued while one runs are sent together in one
``executemany``: one round trip to the database thread per batch, not five per response. ``":memory:"`` databases exist
per connection, so there a single connection serves both, and reads take the same lock to never observe a
half-written transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import orjson
import platformdirs

from ..protocol.errors import APIError
from .base import MAX_PAGE_LIMIT, ItemPage
from .migrations import migrate

MEMORY = ":memory:"
BUSY_TIMEOUT_MS = 5_000
MAX_CHAIN_DEPTH = 100_000
"""Guards the recursive walk against a (corrupt) cycle in ``previous_response_id``; real chains are far shorter."""

# One statement per response: the view's INSTEAD OF trigger (see migrations) upserts the row and replaces its
# items atomically, so a batch of saves is one executemany, one round trip to the database thread.
_WRITE_RESPONSE = "INSERT INTO response_writes VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

# One statement for the whole chain: walk up from the requested response through previous_response_id (each step
# is a primary-key lookup, and a missing/deleted ancestor simply ends the recursion), then fetch every turn's items
# in one join. The LEFT JOIN keeps a row for a known response without items, so "no rows" means "unknown id".
# 'input' sorts before 'output', which gives "inputs, then outputs" per turn; oldest turn (deepest) first.
_LOAD_HISTORY = """
WITH RECURSIVE chain(id, previous_response_id, depth) AS (
    SELECT id, previous_response_id, 0 FROM responses WHERE id = :id
    UNION ALL
    SELECT r.id, r.previous_response_id, chain.depth + 1
    FROM chain JOIN responses AS r ON r.id = chain.previous_response_id
    WHERE chain.depth < :max_depth
)
SELECT i.item
FROM chain LEFT JOIN response_items AS i ON i.response_id = chain.id
ORDER BY chain.depth DESC, i.kind, i.position
"""

# Resolves existence and both cursors in one round trip so a page costs two statements however it is asked for.
_RESOLVE_CURSORS = """
SELECT
    EXISTS (SELECT 1 FROM responses WHERE id = :id),
    (SELECT min(position) FROM response_items WHERE response_id = :id AND kind = 'input' AND item_id = :after),
    (SELECT min(position) FROM response_items WHERE response_id = :id AND kind = 'input' AND item_id = :before)
"""


def default_db_path() -> str:
    """Per-user location, so a bridge started without configuration still keeps responses across restarts."""
    directory = Path(platformdirs.user_data_dir("responses-bridge"))
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory / "responses-bridge.db")


def _write_row(response: dict, input_items: list[dict]) -> tuple:
    try:
        response_id = response["id"]
    except KeyError:
        raise ValueError("cannot store a response without an 'id'") from None
    created_at = response.get("created_at")
    return (
        response_id,
        int(created_at) if created_at is not None else int(time.time()),
        response.get("status"),
        response.get("model"),
        response.get("previous_response_id"),
        orjson.dumps(response),
        # text, not bytes: SQLite reads a BLOB argument to json_each as its binary JSONB format
        orjson.dumps(input_items).decode(),
        orjson.dumps(response.get("output") or []).decode(),
    )


def _validate_page_args(limit: int, order: str) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE_LIMIT:
        message = f"limit must be an integer between 1 and {MAX_PAGE_LIMIT}"
        raise APIError(400, message, param="limit", code="invalid_value")
    if order not in ("asc", "desc"):
        raise APIError(400, "order must be 'asc' or 'desc'", param="order", code="invalid_value")


def _page_query(ascending: bool, lower: int | None, upper: int | None, backward: bool) -> str:
    """Build the page statement from fixed fragments (all values stay bound parameters).

    ``lower``/``upper`` are exclusive position bounds. Normally we scan from the start of the requested order;
    with only ``before`` we scan backwards from the cursor so the client gets the page right before it (the
    "previous page"), not the first page of the list.
    """
    sql = "SELECT item FROM response_items WHERE response_id = :id AND kind = 'input'"
    if lower is not None:
        sql += " AND position > :lower"
    if upper is not None:
        sql += " AND position < :upper"
    scan_ascending = ascending != backward
    return sql + f" ORDER BY position {'ASC' if scan_ascending else 'DESC'} LIMIT :fetch"


class SQLiteResponseStore:
    """:class:`~responses_bridge.store.base.ResponseStore` on a local SQLite file (or ``":memory:"``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._pending: list[tuple[tuple, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def _shared(self) -> bool:
        return self.path == MEMORY

    async def __aenter__(self) -> SQLiteResponseStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None:
            return
        if not self._shared:
            await asyncio.to_thread(Path(self.path).parent.mkdir, parents=True, exist_ok=True)
        writer = await self._connect()
        reader: aiosqlite.Connection | None = None
        try:
            await writer.execute("PRAGMA foreign_keys = ON")
            await migrate(writer)
            if self._shared:
                reader = writer
            else:
                # After migrating: a database from a newer bridge is refused before we change anything in it.
                await writer.execute("PRAGMA journal_mode = WAL")
                await writer.execute("PRAGMA synchronous = NORMAL")
                reader = await self._connect()
                await reader.execute("PRAGMA query_only = ON")
        except BaseException:
            if reader is not None and reader is not writer:
                await reader.close()
            await writer.close()
            raise
        self._writer, self._reader = writer, reader

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves instead of sqlite3's implicit transactions.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return conn

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            await self._flusher  # writes already queued are committed before the connections go
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if reader is not None and reader is not writer:
            await reader.close()
        if writer is not None:
            await writer.close()

    # -- connection discipline -------------------------------------------------------------------------------

    def _require_open(self) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
        if self._writer is None or self._reader is None:
            raise RuntimeError("SQLiteResponseStore is not open; await open() first")
        return self._writer, self._reader

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        _, reader = self._require_open()
        if self._shared:
            async with self._write_lock:
                yield reader
        else:
            yield reader

    # -- shared connections, for the other stores on this database file (conversations, prompts) ------------

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[aiosqlite.Connection]:
        """The one write connection, under the one write lock: every statement run here must be a single
        autocommit statement (or a transaction the caller finishes before leaving the block)."""
        writer, _ = self._require_open()
        async with self._write_lock:
            yield writer

    def reading(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]:
        """The read connection (the write connection under the lock for ``:memory:``)."""
        return self._read()

    # -- ResponseStore ---------------------------------------------------------------------------------------

    async def save_response(self, response: dict, input_items: list[dict]) -> None:
        """Queue the write and wait until its transaction commits.

        Saves that arrive while a transaction is running are committed together in the next one (group
        commit): under load the cost per response is a share of one transaction, not a transaction of its own,
        and each caller still returns only once its own response is durable.
        """
        self._require_open()
        row = _write_row(response, input_items)
        done = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_pending())
        await done

    async def _flush_pending(self) -> None:
        writer, _ = self._require_open()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                # Autocommit: each row is its own atomic statement (the trigger runs inside it), and the whole
                # batch still costs a single hop to the database thread.
                async with self._write_lock:
                    await writer.executemany(_WRITE_RESPONSE, [row for row, _ in batch])
            except BaseException as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("store closed"))
                if not isinstance(exc, Exception):
                    raise
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def get_response(self, response_id: str) -> dict | None:
        async with self._read() as conn:
            rows = list(await conn.execute_fetchall("SELECT response FROM responses WHERE id = ?", (response_id,)))
        return orjson.loads(rows[0][0]) if rows else None

    async def delete_response(self, response_id: str) -> bool:
        # Items go with the row through ON DELETE CASCADE (foreign_keys is on for the write connection).
        writer, _ = self._require_open()
        async with self._write_lock:  # one autocommit statement: atomic on its own
            async with writer.execute("DELETE FROM responses WHERE id = ?", (response_id,)) as cursor:
                return cursor.rowcount > 0

    async def list_input_items(
        self,
        response_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = 20,
        order: str = "desc",
    ) -> ItemPage | None:
        _validate_page_args(limit, order)
        ascending = order == "asc"
        async with self._read() as conn:
            params = {"id": response_id, "after": after, "before": before}
            exists, after_pos, before_pos = next(iter(await conn.execute_fetchall(_RESOLVE_CURSORS, params)))
            if not exists:
                return None
            if after is not None and after_pos is None:
                raise APIError(400, f"No input item found with id '{after}'", param="after", code="invalid_value")
            if before is not None and before_pos is None:
                raise APIError(400, f"No input item found with id '{before}'", param="before", code="invalid_value")
            # In descending order "after" means a lower position and "before" a higher one.
            lower, upper = (after_pos, before_pos) if ascending else (before_pos, after_pos)
            backward = before is not None and after is None
            query = _page_query(ascending, lower, upper, backward)
            bounds = {"id": response_id, "lower": lower, "upper": upper, "fetch": limit + 1}
            rows = await conn.execute_fetchall(query, bounds)
        data = [orjson.loads(row[0]) for row in rows]
        has_more = len(data) > limit
        del data[limit:]
        if backward:
            data.reverse()
        return ItemPage(
            data=data,
            first_id=data[0].get("id") if data else None,
            last_id=data[-1].get("id") if data else None,
            has_more=has_more,
        )

    async def load_history(self, response_id: str) -> list[dict] | None:
        async with self._read() as conn:
            rows = list(
                await conn.execute_fetchall(_LOAD_HISTORY, {"id": response_id, "max_depth": MAX_CHAIN_DEPTH})
            )
        if not rows:
            return None
        return [orjson.loads(item) for (item,) in rows if item is not None]


__all__ = ["SQLiteResponseStore", "default_db_path"]
