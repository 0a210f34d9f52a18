"""Vector store metadata on the response store's SQLite database (same file, same connections).

Holds the vector stores, the files attached to each (ingestion status, last error, attributes, chunking strategy,
usage) and the file batches. ``file_counts``, ``usage_bytes`` and a batch's counts are aggregated from the file
rows on every read, never kept as counters, so no crash or race can leave them disagreeing with the files. The
chunks and their vectors live in the chunk index (chunks.py); this module keeps no text.

Every file row has its own ``seq``: an ingestion job carries the seq of the row it was queued for and finishes only
that row, so a job that outlived a delete, a cancel or a re-add of the same file changes nothing.

A vector store belongs to a tenant; its file rows and batches are owned through it, so every query of them by
store id carries the store's tenant check (``_OWNED``) in the same statement.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from ...listing import trim_page
from ...records import (
    FileCounts,
    InvalidCursor,
    NewFile,
    Page,
    StoredFileBatch,
    StoredVectorStore,
    StoredVectorStoreFile,
    UnknownFile,
    check_page_args,
)
from ..reads import read_row
from ..responses import SQLiteResponseStore
from ..transactions import transaction

_COUNTS = """
coalesce(sum(f.status = 'in_progress'), 0), coalesce(sum(f.status = 'completed'), 0),
coalesce(sum(f.status = 'failed'), 0), coalesce(sum(f.status = 'cancelled'), 0), coalesce(sum(f.usage_bytes), 0)
"""
_STORE_SELECT = f"""
SELECT s.id, s.created_at, s.name, s.description, s.metadata, s.expires_after, s.last_active_at, s.embedder,
       {_COUNTS}
FROM vector_stores AS s LEFT JOIN vector_store_files AS f ON f.vector_store_id = s.id
"""
_FILE_COLUMNS = ("f.seq, f.vector_store_id, f.file_id, f.created_at, f.status, f.last_error, f.attributes, "
                 "f.chunking, f.usage_bytes")
_CLAIMABLE = ("SELECT seq FROM vector_store_files WHERE status = 'in_progress' "
              "AND (lease_until IS NULL OR lease_until < ?) ORDER BY seq")
_BATCH_SELECT = f"""
SELECT b.id, b.vector_store_id, b.created_at, b.cancelled, {_COUNTS}
FROM vector_store_file_batches AS b
LEFT JOIN vector_store_batch_files AS bf ON bf.batch_id = b.id
LEFT JOIN vector_store_files AS f ON f.vector_store_id = b.vector_store_id AND f.file_id = bf.file_id
"""
_INSERT_FILE = """
INSERT INTO vector_store_files (vector_store_id, file_id, created_at, status, attributes, chunking)
VALUES (?, ?, ?, 'in_progress', ?, ?)
"""


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _store(row: Sequence[Any]) -> StoredVectorStore:
    return StoredVectorStore(
        id=row[0], created_at=int(row[1]), name=row[2], description=row[3], metadata=orjson.loads(row[4]),
        expires_after=orjson.loads(row[5]) if row[5] is not None else None, last_active_at=int(row[6]),
        embedder=row[7], file_counts=FileCounts(*(int(n) for n in row[8:12])), usage_bytes=int(row[12]))


def _file(row: Sequence[Any]) -> StoredVectorStoreFile:
    return StoredVectorStoreFile(
        seq=int(row[0]), vector_store_id=row[1], file_id=row[2], created_at=int(row[3]), status=row[4],
        last_error=orjson.loads(row[5]) if row[5] is not None else None, attributes=orjson.loads(row[6]),
        chunking=orjson.loads(row[7]), usage_bytes=int(row[8]))


def _batch(row: Sequence[Any]) -> StoredFileBatch:
    return StoredFileBatch(id=row[0], vector_store_id=row[1], created_at=int(row[2]), cancelled=bool(row[3]),
                           file_counts=FileCounts(*(int(n) for n in row[4:8])))



_OWNED = "EXISTS (SELECT 1 FROM vector_stores WHERE id = :store AND tenant = :tenant)"
"""The store named ``:store`` is ``:tenant``'s: the condition every query of a store's children carries."""


def _attach(conn: sqlite3.Connection, vector_store_id: str, created_at: int, files: Sequence[NewFile],
            tenant: str) -> None:
    """Attach files (a file already attached starts over: its old row goes, a new one with a new seq comes; a file
    named twice is attached once, as last named). Raises :class:`UnknownFile` for the first file that is not a
    live file of ``tenant`` (the caller's transaction then rolls back)."""
    files = list({f.file_id: f for f in files}.values())
    owned = {row[0] for row in conn.execute(
        "SELECT id FROM files WHERE id IN (SELECT value FROM json_each(?)) AND tenant = ? "
        "AND (expires_at IS NULL OR expires_at > ?)", (_json([f.file_id for f in files]), tenant, created_at))}
    for f in files:
        if f.file_id not in owned:
            raise UnknownFile(f.file_id)
    conn.executemany("DELETE FROM vector_store_files WHERE vector_store_id = ? AND file_id = ?",
                     [(vector_store_id, f.file_id) for f in files])
    conn.executemany(_INSERT_FILE, [(vector_store_id, f.file_id, created_at, _json(dict(f.attributes)),
                                     _json(dict(f.chunking))) for f in files])


def _page_bounds(ascending: bool, after_seq: int | None, before_seq: int | None) -> tuple[str, bool]:
    """The seq conditions and scan direction of a page: in descending order ``after`` means a lower seq; with only
    ``before`` the scan runs backwards from the cursor, so the client gets the page right before it."""
    lower, upper = (after_seq, before_seq) if ascending else (before_seq, after_seq)
    sql = ""
    if lower is not None:
        sql += " AND {seq} > :lower"
    if upper is not None:
        sql += " AND {seq} < :upper"
    backward = before_seq is not None and after_seq is None
    return sql, ascending != backward


class SQLiteVectorStoreStore:
    """Vector store metadata sharing a :class:`SQLiteResponseStore`'s connections."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    # -- vector stores ---------------------------------------------------------------------------------------

    async def create_store(self, store: StoredVectorStore, files: Sequence[NewFile], *, tenant: str) -> list[int]:
        """Insert the store and its first files in one transaction; the files' seqs, in order."""

        def create(conn: sqlite3.Connection) -> list[int]:
            with transaction(conn):
                conn.execute(
                    "INSERT INTO vector_stores (id, created_at, name, description, metadata, expires_after, "
                    "last_active_at, embedder, tenant) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (store.id, store.created_at, store.name, store.description, _json(store.metadata),
                     _json(store.expires_after) if store.expires_after is not None else None, store.last_active_at,
                     store.embedder, tenant))
                _attach(conn, store.id, store.created_at, files, tenant)
                return _seqs(conn, store.id, files)

        return await self._db.run_write("create_vector_store", create)

    async def get_store(self, vector_store_id: str, *, tenant: str) -> StoredVectorStore | None:
        row = await read_row(self._db, f"{_STORE_SELECT} WHERE s.id = ? AND s.tenant = ? GROUP BY s.seq",
                             (vector_store_id, tenant))
        return _store(row) if row is not None else None

    async def list_stores(self, *, tenant: str, limit: int, order: str, after: str | None = None,
                          before: str | None = None) -> Page:
        check_page_args(limit, order)
        resolve = "SELECT seq FROM vector_stores WHERE id = ? AND tenant = ?"
        async with self._db.reading() as conn:
            after_seq = await _cursor(conn, resolve, (after, tenant), "after", after)
            before_seq = await _cursor(conn, resolve, (before, tenant), "before", before)
            bounds, scan_ascending = _page_bounds(order == "asc", after_seq, before_seq)
            sql = (f"{_STORE_SELECT} WHERE s.tenant = :tenant {bounds.format(seq='s.seq')} GROUP BY s.seq "
                   f"ORDER BY s.seq {'ASC' if scan_ascending else 'DESC'} LIMIT :fetch")
            values = {"fetch": limit + 1, "tenant": tenant, **_bound_values(order, after_seq, before_seq)}
            rows = list(await conn.execute_fetchall(sql, values))
        return _finish_page([_store(row) for row in rows], limit, backward=before is not None and after is None)

    async def update_store(self, vector_store_id: str, changes: Mapping[str, Any], *, tenant: str) -> bool:
        """Set ``name``, ``metadata``, ``expires_after`` and/or ``last_active_at`` (only the keys given)."""
        columns: dict[str, Callable[[Any], Any]] = {"name": lambda v: v, "metadata": _json, "last_active_at": int,
                   "expires_after": lambda v: None if v is None else _json(v)}
        sets = [(name, columns[name](value)) for name, value in changes.items()]
        if not sets:
            return await self.get_store(vector_store_id, tenant=tenant) is not None
        sql = f"UPDATE vector_stores SET {', '.join(f'{name} = ?' for name, _ in sets)} WHERE id = ? AND tenant = ?"
        async with self._db.writing() as conn, conn.execute(sql, (*[v for _, v in sets], vector_store_id,
                                                                  tenant)) as cur:
            return cur.rowcount > 0

    async def delete_store(self, vector_store_id: str, *, tenant: str) -> bool:
        """Delete the store with its file rows and batches (ON DELETE CASCADE)."""
        async with self._db.writing() as conn, conn.execute("DELETE FROM vector_stores WHERE id = ? AND tenant = ?",
                                                            (vector_store_id, tenant)) as cursor:
            return cursor.rowcount > 0

    # -- files -----------------------------------------------------------------------------------------------

    async def add_files(self, vector_store_id: str, created_at: int, files: Sequence[NewFile], *, tenant: str,
                        batch_id: str | None = None) -> list[int] | None:
        """Attach files (optionally as a new batch) in one transaction; their seqs, or None for an unknown
        store."""

        def add(conn: sqlite3.Connection) -> list[int] | None:
            with transaction(conn):
                if conn.execute("SELECT 1 FROM vector_stores WHERE id = ? AND tenant = ?",
                                (vector_store_id, tenant)).fetchone() is None:
                    return None
                _attach(conn, vector_store_id, created_at, files, tenant)
                if batch_id is not None:
                    conn.execute("INSERT INTO vector_store_file_batches (id, vector_store_id, created_at) "
                                 "VALUES (?, ?, ?)", (batch_id, vector_store_id, created_at))
                    conn.executemany("INSERT OR IGNORE INTO vector_store_batch_files (batch_id, file_id) "
                                     "VALUES (?, ?)", [(batch_id, f.file_id) for f in files])
                return _seqs(conn, vector_store_id, files)

        return await self._db.run_write("add_vector_store_files", add)

    async def get_file(self, vector_store_id: str, file_id: str, *, tenant: str) -> StoredVectorStoreFile | None:
        row = await read_row(
            self._db,
            f"SELECT {_FILE_COLUMNS} FROM vector_store_files AS f WHERE f.vector_store_id = :store "
            f"AND f.file_id = :file AND {_OWNED}", {"store": vector_store_id, "file": file_id, "tenant": tenant})
        return _file(row) if row is not None else None

    async def current_seq(self, vector_store_id: str, file_id: str) -> int | None:
        """Across tenants: workers only."""
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(
                "SELECT seq FROM vector_store_files WHERE vector_store_id = ? AND file_id = ?",
                (vector_store_id, file_id)))
        return int(rows[0][0]) if rows else None

    async def get_file_by_seq(self, seq: int) -> StoredVectorStoreFile | None:
        """Across tenants: workers only."""
        row = await read_row(self._db, f"SELECT {_FILE_COLUMNS} FROM vector_store_files AS f WHERE f.seq = ?", (seq,))
        return _file(row) if row is not None else None

    async def list_files(self, vector_store_id: str, *, tenant: str, limit: int, order: str,
                         after: str | None = None, before: str | None = None, status: str | None = None,
                         batch_id: str | None = None) -> Page:
        """A page of a store's files (of one batch's files with ``batch_id``), optionally of one status."""
        check_page_args(limit, order)
        where = f"f.vector_store_id = :store AND {_OWNED}"
        if batch_id is not None:
            where += (" AND f.file_id IN (SELECT bf.file_id FROM vector_store_batch_files AS bf"
                      " JOIN vector_store_file_batches AS b ON b.id = bf.batch_id"
                      " WHERE bf.batch_id = :batch AND b.vector_store_id = :store)")
        if status is not None:
            where += " AND f.status = :status"
        resolve = (f"SELECT seq FROM vector_store_files WHERE vector_store_id = :store AND file_id = :file "
                   f"AND {_OWNED}")
        async with self._db.reading() as conn:
            after_seq = await _cursor(conn, resolve, {"store": vector_store_id, "file": after, "tenant": tenant},
                                      "after", after)
            before_seq = await _cursor(conn, resolve, {"store": vector_store_id, "file": before, "tenant": tenant},
                                       "before", before)
            bounds, scan_ascending = _page_bounds(order == "asc", after_seq, before_seq)
            sql = (f"SELECT {_FILE_COLUMNS} FROM vector_store_files AS f WHERE {where} {bounds.format(seq='f.seq')} "
                   f"ORDER BY f.seq {'ASC' if scan_ascending else 'DESC'} LIMIT :fetch")
            rows = list(await conn.execute_fetchall(sql, {
                "store": vector_store_id, "tenant": tenant, "batch": batch_id, "status": status,
                "fetch": limit + 1, **_bound_values(order, after_seq, before_seq)}))
        return _finish_page([_file(row) for row in rows], limit, backward=before is not None and after is None)

    async def set_file_attributes(self, vector_store_id: str, file_id: str, attributes: Mapping[str, Any], *,
                                  tenant: str) -> bool:
        sql = (f"UPDATE vector_store_files SET attributes = :attributes WHERE vector_store_id = :store "
               f"AND file_id = :file AND {_OWNED}")
        values = {"attributes": _json(dict(attributes)), "store": vector_store_id, "file": file_id, "tenant": tenant}
        async with self._db.writing() as conn, conn.execute(sql, values) as cursor:
            return cursor.rowcount > 0

    async def delete_file(self, vector_store_id: str, file_id: str, *, tenant: str) -> bool:
        sql = f"DELETE FROM vector_store_files WHERE vector_store_id = :store AND file_id = :file AND {_OWNED}"
        values = {"store": vector_store_id, "file": file_id, "tenant": tenant}
        async with self._db.writing() as conn, conn.execute(sql, values) as cursor:
            return cursor.rowcount > 0

    async def delete_file_everywhere(self, file_id: str) -> list[str]:
        """Detach the file from every vector store holding it; the ids of those stores. Across tenants: workers
        only (run after the file itself was deleted by its owner or by expiry)."""
        sql = "DELETE FROM vector_store_files WHERE file_id = ? RETURNING vector_store_id"
        async with self._db.writing() as conn, conn.execute(sql, (file_id,)) as cursor:
            return sorted({str(row[0]) for row in await cursor.fetchall()})

    async def finish_file(self, seq: int, status: str, *, usage_bytes: int = 0,
                          last_error: Mapping[str, Any] | None = None, owner: str | None = None) -> bool:
        """Move one in-progress row to ``completed``/``failed``; False when that row is gone, no longer in
        progress (deleted, cancelled, re-added), or (with ``owner``) claimed by another worker since, in which
        case nothing changes. Across tenants: workers only."""
        sql = ("UPDATE vector_store_files SET status = ?, usage_bytes = ?, last_error = ?, claimed_by = NULL, "
               "lease_until = NULL WHERE seq = ? AND status = 'in_progress'")
        values: tuple[object, ...] = (status, usage_bytes, _json(dict(last_error)) if last_error is not None else None,
                                      seq)
        if owner is not None:
            sql += " AND claimed_by = ?"
            values += (owner,)
        async with self._db.writing() as conn, conn.execute(sql, values) as cursor:
            return cursor.rowcount > 0

    async def in_progress_files(self) -> list[StoredVectorStoreFile]:
        """Every row still in progress, oldest first: what a restart must ingest again. Across tenants: workers
        only."""
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(
                f"SELECT {_FILE_COLUMNS} FROM vector_store_files AS f WHERE f.status = 'in_progress' ORDER BY f.seq"))
        return [_file(row) for row in rows]

    async def has_files_to_ingest(self, *, unclaimed: bool) -> bool:
        """Whether a row is in progress (``unclaimed``: one nobody holds). Across tenants: workers only."""
        sql, args = (_CLAIMABLE, (time.time(),)) if unclaimed else (
            "SELECT seq FROM vector_store_files WHERE status = 'in_progress'", ())
        async with self._db.reading() as conn:
            return bool(list(await conn.execute_fetchall(sql + " LIMIT 1", args)))

    # -- ingestion claims (several worker processes may share the file: leases, as on PostgreSQL) ---------------

    async def claim_next(self, owner: str, lease_seconds: float, limit: int) -> list[StoredVectorStoreFile]:
        """Claim up to ``limit`` in-progress rows nobody holds (never claimed, or their lease has passed), oldest
        first, for ``lease_seconds``. A read first: a poll that finds nothing takes no write lock. Across
        tenants: workers only."""
        now = time.time()
        async with self._db.reading() as conn:
            found = list(await conn.execute_fetchall(_CLAIMABLE + " LIMIT 1", (now,)))
        if not found:
            return []

        def claim(conn: sqlite3.Connection) -> list[Any]:
            with transaction(conn):
                rows = conn.execute(f"SELECT {_FILE_COLUMNS} FROM vector_store_files AS f WHERE f.seq IN "
                                    f"(SELECT seq FROM ({_CLAIMABLE} LIMIT ?)) ORDER BY f.seq",
                                    (time.time(), limit)).fetchall()
                conn.executemany("UPDATE vector_store_files SET claimed_by = ?, lease_until = ? WHERE seq = ?",
                                 [(owner, time.time() + lease_seconds, row[0]) for row in rows])
            return rows

        return [_file(row) for row in await self._db.run_write("claim_vector_store_files", claim)]

    async def claim_file(self, seq: int, owner: str, lease_seconds: float) -> bool:
        """Claim (or renew the claim of) one in-progress row; False when another worker holds it or it is no
        longer in progress. Across tenants: workers only."""
        now = time.time()
        sql = ("UPDATE vector_store_files SET claimed_by = ?, lease_until = ? WHERE seq = ? AND status = "
               "'in_progress' AND (claimed_by IS NULL OR claimed_by = ? OR lease_until < ?)")
        async with self._db.writing() as conn, conn.execute(
                sql, (owner, now + lease_seconds, seq, owner, now)) as cursor:
            return cursor.rowcount > 0

    async def release_claims(self, owner: str | None) -> int:
        """Give up every claim ``owner`` holds (a worker stopping cleanly), so another worker takes the rows at its
        next poll instead of after the lease; ``None``: every claim. Across tenants: workers only."""
        sql = ("UPDATE vector_store_files SET claimed_by = NULL, lease_until = NULL "
               "WHERE claimed_by IS NOT NULL AND (claimed_by = ? OR ? IS NULL) AND status = 'in_progress'")
        async with self._db.writing() as conn, conn.execute(sql, (owner, owner)) as cursor:
            return cursor.rowcount

    # -- batches ---------------------------------------------------------------------------------------------

    async def get_batch(self, vector_store_id: str, batch_id: str, *, tenant: str) -> StoredFileBatch | None:
        row = await read_row(
            self._db,
            f"{_BATCH_SELECT} WHERE b.id = :batch AND b.vector_store_id = :store AND {_OWNED} GROUP BY b.seq",
            {"batch": batch_id, "store": vector_store_id, "tenant": tenant})
        return _batch(row) if row is not None else None

    async def cancel_batch(self, vector_store_id: str, batch_id: str, *, tenant: str) -> bool:
        """Mark the batch's files still in progress ``cancelled``, and the batch cancelled if any were (a batch
        already finished stays as it ended), in one transaction; False for an unknown batch."""

        def cancel(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                if conn.execute(f"SELECT 1 FROM vector_store_file_batches WHERE id = :batch "
                                f"AND vector_store_id = :store AND {_OWNED}",
                                {"batch": batch_id, "store": vector_store_id, "tenant": tenant}).fetchone() is None:
                    return False
                stopped = conn.execute(
                    "UPDATE vector_store_files SET status = 'cancelled' WHERE vector_store_id = ? "
                    "AND status = 'in_progress' "
                    "AND file_id IN (SELECT file_id FROM vector_store_batch_files WHERE batch_id = ?)",
                    (vector_store_id, batch_id)).rowcount
                if stopped:
                    conn.execute("UPDATE vector_store_file_batches SET cancelled = 1 WHERE id = ?", (batch_id,))
                return True

        return await self._db.run_write("cancel_vector_store_file_batch", cancel)


def _seqs(conn: sqlite3.Connection, vector_store_id: str, files: Sequence[NewFile]) -> list[int]:
    return [int(conn.execute("SELECT seq FROM vector_store_files WHERE vector_store_id = ? AND file_id = ?",
                             (vector_store_id, f.file_id)).fetchone()[0]) for f in files]


async def _cursor(conn: Any, sql: str, args: tuple[Any, ...] | dict[str, Any], param: str,
                  value: str | None) -> int | None:
    if value is None:
        return None
    rows = list(await conn.execute_fetchall(sql, args))
    if not rows:
        raise InvalidCursor(param, value)
    return int(rows[0][0])


def _bound_values(order: str, after_seq: int | None, before_seq: int | None) -> dict[str, int | None]:
    lower, upper = (after_seq, before_seq) if order == "asc" else (before_seq, after_seq)
    return {"lower": lower, "upper": upper}


def _finish_page(data: list[Any], limit: int, *, backward: bool) -> Page:
    has_more = trim_page(data, limit, backward=backward)
    return Page(data=data, has_more=has_more)
