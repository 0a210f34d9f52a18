"""Embedded response store on SQLite, through aiosqlite so no query ever blocks the event loop.

A file database runs in WAL mode with one write connection and one read connection: readers never wait for a
writer. Saves queued while one runs are committed together (group commit): one transaction and one hop to the
database thread per batch, each response inside its own savepoint so a row that fails fails only its own caller.
Items are written one row each with ``executemany`` (no JSON array of the whole input is built), into rowid tables
whose blobs never sit in an index b-tree (see migration 4), so the cost of a save does not depend on its
neighbours. ``":memory:"`` databases exist per connection, so there a single connection serves both, and reads
take the same lock to never observe a half-written transaction.

The store also measures itself: how long each operation takes and how long the oldest queued or running write
has been waiting (``write_stall_seconds``), which readiness and ``/metrics`` report (store/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from ...fairness.memory_charge import reserve_loading, reserve_references, reserving
from .. import metrics
from ..items import MAX_CHAIN_DEPTH
from ..listing import bounds, responses_page, trim_page
from ..records import InvalidCursor, ItemPage, ResponseFilter, ResponsePage, check_page_args, item_page
from ..timings import CALLER_KEY_ID
from .console.browse import SQLiteResponseBrowser
from .console.response_facts import CATCH_UP_EVERY, keep_up
from .cursors import METADATA_JOIN, resolve_keys
from .db_thread import on_db_thread as _on_db_thread
from .migrations import LATEST_VERSION, migrate
from .private_files import make_private_database, make_private_directory
from .response_rows import _Save, _save_row, _write_saves, bind_as_is
from .stored_items import find_items, measure_items
from .transactions import purge_ranges

T = TypeVar("T")

MEMORY = ":memory:"
BUSY_TIMEOUT_MS = 5_000


# One statement for the whole chain: walk up from the requested response through previous_response_id (each step
# is a primary-key lookup, and a missing/deleted ancestor simply ends the recursion), then fetch every turn's items
# in one join. Only the tenant's responses are walked: another tenant's ancestor ends the chain like a deleted one.
# The LEFT JOIN keeps a row for a known response without items, so "no rows" means "unknown id".
# The rows come back unsorted and are ordered in Python (oldest turn, i.e. deepest, first; 'input' before 'output';
# by position): an ORDER BY here would copy every item's JSON, however large, through SQLite's sorter.
_LOAD_HISTORY = """
WITH RECURSIVE chain(id, previous_response_id, depth) AS (
    SELECT id, previous_response_id, 0 FROM responses WHERE id = :id AND tenant = :tenant
    UNION ALL
    SELECT r.id, r.previous_response_id, chain.depth + 1
    FROM chain JOIN responses AS r ON r.id = chain.previous_response_id AND r.tenant = :tenant
    WHERE chain.depth < :max_depth
)
SELECT chain.depth, i.kind, i.position, i.item
FROM chain LEFT JOIN response_items AS i ON i.response_id = chain.id
"""
# What loading the chain would read, before it is read (fairness/memory_charge.py): its responses, its items and their
# bytes, from the rows' headers (``length()`` of a BLOB reads no content).
_MEASURE_HISTORY = _LOAD_HISTORY.split("SELECT chain.depth", 1)[0] + """SELECT count(DISTINCT chain.id), count(i.item),
       coalesce(sum(length(i.item)), 0)
FROM chain LEFT JOIN response_items AS i ON i.response_id = chain.id
"""

# Resolves existence and both cursors in one round trip so a page costs two statements however it is asked for.
# A cursor is found by scanning the response's input rows in order (no index on item ids: see migration 4).
_RESOLVE_CURSORS = """
SELECT
    EXISTS (SELECT 1 FROM responses WHERE id = :id AND tenant = :tenant),
    (SELECT min(position) FROM response_items WHERE response_id = :id AND kind = 'input' AND item_id = :after),
    (SELECT min(position) FROM response_items WHERE response_id = :id AND kind = 'input' AND item_id = :before)
"""


def default_db_path(*, make_directory: bool = True) -> str:
    """Per-user location, so a bridge started without configuration still keeps responses across restarts.
    ``make_directory``: False for a command that only looks for the database (``keys``), which creates nothing.
    platformdirs is imported here, by a start that names no database: one given its database never loads it."""
    import platformdirs

    directory = Path(platformdirs.user_data_dir("responses-bridge"))
    if make_directory:
        make_private_directory(directory)
    return str(directory / "responses-bridge.db")


def _page_query(ascending: bool, lower: int | None, upper: int | None, backward: bool) -> str:
    """Build the page statement from fixed fragments (all values stay bound parameters).

    ``lower``/``upper`` are exclusive position bounds. Normally we scan from the start of the requested order;
    with only ``before`` we scan backwards from the cursor so the client gets the page right before it (the
    "previous page"), not the first page of the list.
    """
    sql = ("SELECT item FROM response_items WHERE response_id = :id AND kind = 'input' "
           "AND response_id IN (SELECT id FROM responses WHERE id = :id AND tenant = :tenant)")
    if lower is not None:
        sql += " AND position > :lower"
    if upper is not None:
        sql += " AND position < :upper"
    scan_ascending = ascending != backward
    return sql + f" ORDER BY position {'ASC' if scan_ascending else 'DESC'} LIMIT :fetch"




WAL_SWITCH_SECONDS = 10.0


async def _use_wal(conn: aiosqlite.Connection) -> None:
    """WAL mode, which the file keeps once set. Switching needs the file to itself, and SQLite does not wait for
    that (no busy handler): a worker starting beside another that holds the file for a moment retries, for up to
    ``WAL_SWITCH_SECONDS``, instead of failing its start with "database is locked"."""
    deadline = time.monotonic() + WAL_SWITCH_SECONDS
    while True:
        rows = list(await conn.execute_fetchall("PRAGMA journal_mode"))
        if rows and str(rows[0][0]).lower() == "wal":
            return
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


class SQLiteResponseStore:
    """:class:`~responses_bridge.store.base.ResponseStore` on a local SQLite file (or ``":memory:"``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._pending: list[_Save] = []
        self._flusher: asyncio.Task[None] | None = None
        self._schema_version = 0
        self._unfacted = 0  # saves since the console's facts table last caught up (console/response_facts.py)
        # writes queued or running (token -> when it was queued): the stall and the queue depth are read from it
        self._write_waits: dict[int, float] = {}
        self._tokens = itertools.count(1)
        self.browser = SQLiteResponseBrowser(self)  # the console's reads, on a connection of their own

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
            await asyncio.to_thread(_make_and_try, self.path)
        writer = await self._connect()
        reader: aiosqlite.Connection | None = None
        try:
            await writer.execute("PRAGMA foreign_keys = ON")
            version = await migrate(writer)
            if version != LATEST_VERSION:  # migrate() raises first for a newer file; this is a broken migration list
                raise RuntimeError(f"response store schema is at version {version}, expected {LATEST_VERSION}")
            if self._shared:
                reader = writer
            else:
                # After migrating: a database from a newer bridge is refused before we change anything in it.
                await _use_wal(writer)
                await writer.execute("PRAGMA synchronous = NORMAL")
                reader = await self._connect()
                await reader.execute("PRAGMA query_only = ON")
        except BaseException:
            if reader is not None and reader is not writer:
                await reader.close()
            await writer.close()
            raise
        self._writer, self._reader = writer, reader
        self._schema_version = LATEST_VERSION
        metrics.track(self)

    async def _connect(self) -> aiosqlite.Connection:
        bind_as_is()  # bytes and None bound without sqlite3's adaptation lookup (response_rows.py)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves instead of sqlite3's implicit transactions.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except BaseException:
            await conn.close()  # its worker thread stopped before the failing start closes the loop
            raise
        return conn

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            await self._flusher  # writes already queued are committed before the connections go
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        metrics.untrack(self)
        await self.browser.close()
        if reader is not None and reader is not writer:
            await reader.close()
        if writer is not None:
            await writer.close()

    # -- health ----------------------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Open, and its schema is the one this code was written for (every migration applied)."""
        return self._writer is not None and self._schema_version == LATEST_VERSION

    @property
    def write_queue_depth(self) -> int:
        """Writes queued or running on the one write connection."""
        return len(self._write_waits)

    def write_stall_seconds(self) -> float:
        """How long the oldest queued or running write has been waiting; 0 when none is. A writer stuck on one
        huge statement shows here (and so in readiness) however quickly reads are still answered."""
        if not self._write_waits:
            return 0.0
        oldest = next(iter(self._write_waits.values()))  # tokens are handed out in time order; dicts keep it
        return max(0.0, time.monotonic() - oldest)

    def _wait_begins(self) -> int:
        token = next(self._tokens)
        self._write_waits[token] = time.monotonic()
        return token

    def _wait_ends(self, token: int) -> None:
        self._write_waits.pop(token, None)

    # -- connection discipline -------------------------------------------------------------------------------

    def _require_open(self) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
        if self._writer is None or self._reader is None:
            raise RuntimeError("SQLiteResponseStore is not open; await open() first")
        return self._writer, self._reader

    @contextlib.asynccontextmanager
    async def _read(self, operation: str = "read") -> AsyncIterator[aiosqlite.Connection]:
        _, reader = self._require_open()
        with metrics.timed(operation):
            if self._shared:
                async with self._write_lock:
                    yield reader
            else:
                yield reader

    @contextlib.asynccontextmanager
    async def _write(self, operation: str) -> AsyncIterator[aiosqlite.Connection]:
        """The write connection under the write lock, counted as a pending write from the moment it is asked for."""
        writer, _ = self._require_open()
        token = self._wait_begins()
        try:
            with metrics.timed(operation):
                async with self._write_lock:
                    yield writer
        finally:
            self._wait_ends(token)

    async def run_write(self, operation: str, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``function(connection)`` on the database thread with the write connection, under the write lock:
        several statements in one hop (the caller manages its transaction inside ``function``)."""
        async with self._write(operation) as writer:
            return await _on_db_thread(writer, function)

    # -- shared connections, for the other stores on this database file (conversations, prompts) ------------

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[aiosqlite.Connection]:
        """The one write connection, under the one write lock: every statement run here must be a single
        autocommit statement (or a transaction the caller finishes before leaving the block)."""
        async with self._write("write") as writer:
            yield writer

    def reading(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]:
        """The read connection (the write connection under the lock for ``:memory:``)."""
        return self._read()

    # -- ResponseStore ---------------------------------------------------------------------------------------

    async def save_response(self, response: dict[str, Any], input_items: list[dict[str, Any]], *, tenant: str,
                            conversation_id: str | None = None, lease_owner: str | None = None,
                            timing: Any = None, key_id: str | None = None) -> None:
        """Queue the write and wait until its transaction commits.

        Saves that arrive while a transaction is running are committed together in the next one (group
        commit): under load the cost per response is a share of one transaction, not a transaction of its own,
        and each caller still returns only once its own response is durable. With ``conversation_id``, the
        response's input and output items are appended to that conversation in the same transaction, so a
        conversation never gains the turn of a response that was not stored (nor the other way round).
        ``lease_owner``: the fence of a background run's saves (``ResponseStore.save_response``).
        """
        self._require_open()
        if key_id is None:
            key_id = CALLER_KEY_ID.get()
        with metrics.timed("save"):
            save = _save_row(response, input_items, conversation_id, asyncio.get_running_loop().create_future(),
                             tenant, lease_owner, timing, key_id)
            save.token = self._wait_begins()
            self._pending.append(save)
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush_pending())
            await save.done

    async def _flush_pending(self) -> None:
        writer, _ = self._require_open()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self._write_lock:
                    try:
                        outcomes = await _on_db_thread(writer, functools.partial(_write_saves, saves=batch))
                    except Exception:
                        if len(batch) == 1:
                            raise
                        # the batch's transaction itself failed (e.g. at COMMIT): retry each response alone, so
                        # only the ones that fail again report it
                        outcomes = []
                        for save in batch:
                            try:
                                outcomes += await _on_db_thread(writer, functools.partial(_write_saves, saves=[save]))
                            except Exception as exc:  # noqa: BLE001  (reported to that response's caller)
                                outcomes.append(exc)
            except BaseException as exc:
                for save in batch:
                    self._wait_ends(save.token)
                    if not save.done.done():
                        save.done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("store closed"))
                if not isinstance(exc, Exception):
                    raise
                continue
            for save, outcome in zip(batch, outcomes, strict=True):
                self._wait_ends(save.token)
                if save.done.done():
                    continue
                if outcome is None:
                    save.done.set_result(None)
                else:
                    save.done.set_exception(outcome)
            self._unfacted += len(batch)
            if self._unfacted >= CATCH_UP_EVERY:  # after the callers are answered: none waits for it
                self._unfacted = 0
                await keep_up(writer, self._write_lock)

    async def catch_up_facts(self) -> None:
        """Brings the console's facts table (console/response_facts.py) up to date with every response stored so
        far, by any process: what its reads call first. Only a read when there is nothing to add."""
        writer, reader = self._require_open()
        await keep_up(writer, self._write_lock, None if self._shared else reader)

    async def get_response(self, response_id: str, *, tenant: str) -> dict[str, Any] | None:
        async with self._read("get") as conn:
            rows = list(await conn.execute_fetchall("SELECT response FROM responses WHERE id = ? AND tenant = ?",
                                                    (response_id, tenant)))
        return orjson.loads(rows[0][0]) if rows else None

    async def delete_response(self, response_id: str, *, tenant: str) -> bool:
        # Items and metadata go with the row through ON DELETE CASCADE (foreign_keys is on for the write
        # connection), events through the responses_delete_events trigger; one autocommit statement: atomic.
        async with self._write("delete") as writer, writer.execute(
                "DELETE FROM responses WHERE id = ? AND tenant = ?", (response_id, tenant)) as cursor:
            return cursor.rowcount > 0

    async def list_input_items(
        self,
        response_id: str,
        *,
        tenant: str,
        after: str | None = None,
        before: str | None = None,
        limit: int = 20,
        order: str = "desc",
    ) -> ItemPage | None:
        check_page_args(limit, order)
        ascending = order == "asc"
        async with self._read("list_input_items") as conn:
            params = {"id": response_id, "tenant": tenant, "after": after, "before": before}
            exists, after_pos, before_pos = next(iter(await conn.execute_fetchall(_RESOLVE_CURSORS, params)))
            if not exists:
                return None
            if after is not None and after_pos is None:
                raise InvalidCursor("after", after)
            if before is not None and before_pos is None:
                raise InvalidCursor("before", before)
            # In descending order "after" means a lower position and "before" a higher one.
            lower, upper = (after_pos, before_pos) if ascending else (before_pos, after_pos)
            backward = before is not None and after is None
            query = _page_query(ascending, lower, upper, backward)
            bounds = {"id": response_id, "tenant": tenant, "lower": lower, "upper": upper, "fetch": limit + 1}
            rows = await conn.execute_fetchall(query, bounds)
        data = [orjson.loads(row[0]) for row in rows]
        has_more = trim_page(data, limit, backward=backward)
        return item_page(data, has_more)

    async def list_responses(self, *, tenant: str, after: str | None = None, before: str | None = None,
                             limit: int = 20, order: str = "desc",
                             where: ResponseFilter | None = None) -> ResponsePage:
        check_page_args(limit, order)
        async with self._read("list_responses") as conn:
            after_key, before_key = await resolve_keys(conn, "responses", after, before, tenant)
            page = bounds(order == "asc", after_key, before_key, after_given=after is not None,
                          before_given=before is not None)
            sql, params = responses_page(tenant, where or ResponseFilter(), page, limit + 1,
                                         metadata_join=METADATA_JOIN)
            rows = list(await conn.execute_fetchall(sql, params))
        has_more = trim_page(rows, limit, backward=page.backward)
        return ResponsePage(data=[row[1] for row in rows], ids=[row[0] for row in rows], has_more=has_more)

    async def load_history(self, response_id: str, *, tenant: str) -> list[dict[str, Any]] | None:
        """The chain's items, oldest first; None for an unknown response. What they will cost the request is
        reserved first, from their sizes (fairness/memory_charge.py): it waits for room, or is refused naming
        them, before a row is read."""
        bounds = {"id": response_id, "tenant": tenant, "max_depth": MAX_CHAIN_DEPTH}
        if reserving():
            async with self._read("measure_history") as conn:
                [(responses, items, size)] = await conn.execute_fetchall(_MEASURE_HISTORY, bounds)
            if not responses:
                return None
            await reserve_loading(size, items, f"the history of previous_response_id '{response_id}'")
        async with self._read("load_history") as conn:
            rows = list(await conn.execute_fetchall(_LOAD_HISTORY, bounds))
        if not rows:
            return None
        found = [row for row in rows if row[3] is not None]
        found.sort(key=lambda row: (-row[0], row[1], row[2]))
        return [orjson.loads(row[3]) for row in found]

    # -- retention (across tenants: workers only) ------------------------------------------------------------

    async def find_items(self, item_ids: Sequence[str], *, tenant: str) -> dict[str, dict[str, Any]]:
        """The items named, their cost reserved for the request before they are read (as :meth:`load_history`),
        each reference naming one counted (``item_ids`` holds an id once for each: each becomes a whole item)."""
        if item_ids and reserving():
            async with self._read("measure_items") as conn:
                items, size = await measure_items(conn, item_ids, tenant)
            await reserve_references(size, items, "the item_references to stored items")
        async with self._read("find_items") as conn:
            return await find_items(conn, item_ids, tenant)

    async def response_tenants(self) -> list[str]:
        """Across tenants: workers only (retention). One index seek per tenant (a loose scan of the listing
        index), not a scan of every response."""
        async with self._read("response_tenants") as conn:
            rows = await conn.execute_fetchall(distinct_tenants_sql("responses"))
        return [row[0] for row in rows if row[0] is not None]

    async def purge_responses(self, cutoffs: Mapping[str, int], *, limit: int) -> int:
        """Across tenants: workers only (retention). Each tenant's old responses are a range of the listing
        index (tenant, created_at, id); items and metadata go by cascade, events by trigger, all in one short
        transaction of at most ``limit`` responses."""
        return await self.run_write("purge_responses", purge_ranges(_PURGE_RESPONSES, cutoffs, limit))


_PURGE_RESPONSES = """
DELETE FROM responses WHERE id IN (
    SELECT id FROM responses WHERE tenant = ? AND created_at < ? AND status NOT IN ('queued', 'in_progress')
    ORDER BY created_at LIMIT ?
)
"""


def distinct_tenants_sql(table: str) -> str:
    """Every distinct tenant of ``table`` (one of our own table names, never client input) by a loose index scan:
    each step is one seek in an index led by ``tenant`` to the next greater value."""
    return (f"WITH RECURSIVE t(tenant) AS (SELECT min(tenant) FROM {table} UNION ALL "
            f"SELECT (SELECT min(tenant) FROM {table} WHERE tenant > t.tenant) FROM t WHERE t.tenant IS NOT NULL) "
            "SELECT tenant FROM t")


def _make_and_try(path: str) -> None:
    """Make the file's directory and the file, private (private_files.py), then open it once with plain sqlite3 so
    that its error (a directory, a path under a file, no permission) surfaces here. aiosqlite, when its connect
    fails, queues its worker thread's stop without awaiting it: the thread then answers a future on an event loop
    the failing start has already closed, and prints that traceback under the one line ``serve`` was to stop on."""
    make_private_database(path)
    sqlite3.connect(path).close()


__all__ = ["SQLiteResponseStore", "default_db_path", "distinct_tenants_sql"]
