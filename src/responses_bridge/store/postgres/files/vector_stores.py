"""Vector store metadata on PostgreSQL: the stores, their files with ingestion status, and file batches, shared by
every replica. Same rules as the SQLite store (store/sqlite/files/vector_stores.py): counts, usage and batch status are
aggregated from the file rows on every read, and each file row has its own ``seq`` that ingestion jobs carry.

Ingestion is claimed one file at a time across replicas: a worker takes rows with ``FOR UPDATE SKIP LOCKED`` (two
replicas polling at once take different rows), marks them ``claimed_by`` itself until ``lease_until``, renews the
lease while it works, and finishes a row only while it holds it. A replica that dies stops renewing; once the
lease has passed another replica's poll claims the row and ingests the file again. Lease times are the
database's clock, so replicas with skewed clocks agree.

A vector store belongs to a tenant; its file rows and batches are owned through it, so every statement that
reaches them by store id carries the store's tenant check (``_owned``), and an attach takes only the tenant's own
live files (locked ``FOR SHARE`` until the attach commits, so a concurrent delete of a file waits for it and its
deletion hook then detaches it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

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
from ..database import PostgresDatabase
from ..sql import page_bounds, pg_texts

if TYPE_CHECKING:
    from ..migrations import Connection

_COUNTS = """
count(f.seq) FILTER (WHERE f.status = 'in_progress'), count(f.seq) FILTER (WHERE f.status = 'completed'),
count(f.seq) FILTER (WHERE f.status = 'failed'), count(f.seq) FILTER (WHERE f.status = 'cancelled'),
coalesce(sum(f.usage_bytes), 0)
"""
_STORE_SELECT = f"""
SELECT s.id, s.created_at, s.name, s.description, s.metadata, s.expires_after, s.last_active_at, s.embedder,
       {_COUNTS}
FROM vector_stores AS s LEFT JOIN vector_store_files AS f ON f.vector_store_id = s.id
"""
_FILE_COLUMNS = ("f.seq, f.vector_store_id, f.file_id, f.created_at, f.status, f.last_error, f.attributes, "
                 "f.chunking, f.usage_bytes")
_BATCH_SELECT = f"""
SELECT b.id, b.vector_store_id, b.created_at, b.cancelled, {_COUNTS}
FROM vector_store_file_batches AS b
LEFT JOIN vector_store_batch_files AS bf ON bf.batch_id = b.id
LEFT JOIN vector_store_files AS f ON f.vector_store_id = b.vector_store_id AND f.file_id = bf.file_id
"""
_LEASE = "clock_timestamp() + make_interval(secs => $3)"
_CLAIM_NEXT = f"""
UPDATE vector_store_files AS f SET claimed_by = $1, lease_until = {_LEASE.replace("$3", "$2")}
WHERE f.seq IN (
    SELECT seq FROM vector_store_files
    WHERE status = 'in_progress' AND (lease_until IS NULL OR lease_until < clock_timestamp())
    ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED
)
RETURNING {_FILE_COLUMNS}
"""
_CLAIM = f"""
UPDATE vector_store_files SET claimed_by = $2, lease_until = {_LEASE}
WHERE seq = $1 AND status = 'in_progress'
  AND (claimed_by IS NULL OR claimed_by = $2 OR lease_until < clock_timestamp())
"""


def _owned(store: int, tenant: int) -> str:
    """The store named by parameter ``$store`` is the tenant in ``$tenant``'s: what every statement reaching a
    store's children carries."""
    return f"EXISTS (SELECT 1 FROM vector_stores WHERE id = ${store} AND tenant = ${tenant})"


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _store(row: Any) -> StoredVectorStore:
    return StoredVectorStore(
        id=row[0], created_at=int(row[1]), name=row[2], description=row[3], metadata=orjson.loads(row[4]),
        expires_after=orjson.loads(row[5]) if row[5] is not None else None, last_active_at=int(row[6]),
        embedder=row[7], file_counts=FileCounts(*(int(n) for n in row[8:12])), usage_bytes=int(row[12]))


def _file(row: Any) -> StoredVectorStoreFile:
    return StoredVectorStoreFile(
        seq=int(row[0]), vector_store_id=row[1], file_id=row[2], created_at=int(row[3]), status=row[4],
        last_error=orjson.loads(row[5]) if row[5] is not None else None, attributes=orjson.loads(row[6]),
        chunking=orjson.loads(row[7]), usage_bytes=int(row[8]))


def _batch(row: Any) -> StoredFileBatch:
    return StoredFileBatch(id=row[0], vector_store_id=row[1], created_at=int(row[2]), cancelled=bool(row[3]),
                           file_counts=FileCounts(*(int(n) for n in row[4:8])))


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def _attach(conn: Connection, vector_store_id: str, created_at: int, files: Sequence[NewFile],
                  tenant: str) -> list[int]:
    """Attach files (a file already attached starts over with a new row and seq; a file named twice is attached
    once, as last named); the seqs in the order of ``files``. Raises :class:`UnknownFile` for the first file that
    is not a live file of ``tenant`` (the caller's transaction then rolls back)."""
    unique = {f.file_id: f for f in files}
    if unique:
        owned = {row[0] for row in await conn.fetch(
            "SELECT id FROM files WHERE id = ANY($1::text[]) AND tenant = $2 "
            "AND (expires_at IS NULL OR expires_at > $3) FOR SHARE", pg_texts(unique), tenant, created_at)}
        for f in files:
            if f.file_id not in owned:
                raise UnknownFile(f.file_id)
    await conn.execute("DELETE FROM vector_store_files WHERE vector_store_id = $1 AND file_id = ANY($2::text[])",
                       vector_store_id, list(unique))
    rows = await conn.fetch(
        "INSERT INTO vector_store_files (vector_store_id, file_id, created_at, status, attributes, chunking) "
        "SELECT $1, file_id, $2, 'in_progress', attributes, chunking "
        "FROM unnest($3::text[], $4::bytea[], $5::bytea[]) WITH ORDINALITY AS u(file_id, attributes, chunking, n) "
        "ORDER BY n RETURNING file_id, seq",
        vector_store_id, created_at, list(unique), [_json(dict(f.attributes)) for f in unique.values()],
        [_json(dict(f.chunking)) for f in unique.values()])
    seqs = {row[0]: int(row[1]) for row in rows}
    return [seqs[f.file_id] for f in files]


async def _cursor(conn: Connection, sql: str, args: tuple[Any, ...], param: str,
                  value: str | None) -> int | None:
    if value is None:
        return None
    found = await conn.fetchval(sql, *args)
    if found is None:
        raise InvalidCursor(param, value)
    return int(found)


def _finish_page(data: list[Any], limit: int, *, backward: bool) -> Page:
    has_more = trim_page(data, limit, backward=backward)
    return Page(data=data, has_more=has_more)


class PostgresVectorStoreStore:
    """Vector store metadata on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    # -- vector stores ---------------------------------------------------------------------------------------

    async def create_store(self, store: StoredVectorStore, files: Sequence[NewFile], *, tenant: str) -> list[int]:
        """Insert the store as ``tenant``'s and attach its first files in one transaction; the files' seqs."""
        async with self._db.transaction("create_vector_store") as conn:
            await conn.execute(
                "INSERT INTO vector_stores (id, created_at, name, description, metadata, expires_after, "
                "last_active_at, embedder, tenant) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                store.id, store.created_at, store.name, store.description, _json(store.metadata),
                _json(store.expires_after) if store.expires_after is not None else None, store.last_active_at,
                store.embedder, tenant)
            return await _attach(conn, store.id, store.created_at, files, tenant)

    async def get_store(self, vector_store_id: str, *, tenant: str) -> StoredVectorStore | None:
        row = await self._db.fetch_row("get_vector_store",
                                       f"{_STORE_SELECT} WHERE s.id = $1 AND s.tenant = $2 GROUP BY s.seq",
                                       vector_store_id, tenant)
        return _store(row) if row is not None else None

    async def list_stores(self, *, tenant: str, limit: int, order: str, after: str | None = None,
                          before: str | None = None) -> Page:
        check_page_args(limit, order)
        async with self._db.acquire("list_vector_stores") as conn:
            resolve = "SELECT seq FROM vector_stores WHERE id = $1 AND tenant = $2"
            after_seq = await _cursor(conn, resolve, (after, tenant), "after", after)
            before_seq = await _cursor(conn, resolve, (before, tenant), "before", before)
            args: list[Any] = [limit + 1, tenant]
            bounds, scan_ascending = page_bounds(order == "asc", after_seq, before_seq, args, "s.seq")
            rows = await conn.fetch(f"{_STORE_SELECT} WHERE s.tenant = $2 {bounds} GROUP BY s.seq "
                                    f"ORDER BY s.seq {'ASC' if scan_ascending else 'DESC'} LIMIT $1", *args)
        return _finish_page([_store(row) for row in rows], limit, backward=before is not None and after is None)

    async def update_store(self, vector_store_id: str, changes: Mapping[str, Any], *, tenant: str) -> bool:
        """Set ``name``, ``metadata``, ``expires_after`` and/or ``last_active_at`` (only the keys given)."""
        convert: dict[str, Callable[[Any], Any]] = {"name": lambda v: v, "metadata": _json, "last_active_at": int,
                   "expires_after": lambda v: None if v is None else _json(v)}
        sets = [(name, convert[name](value)) for name, value in changes.items()]
        if not sets:
            return await self.get_store(vector_store_id, tenant=tenant) is not None
        assignments = ", ".join(f"{name} = ${number}" for number, (name, _) in enumerate(sets, 3))
        async with self._db.acquire("update_vector_store") as conn:
            status = await conn.execute(f"UPDATE vector_stores SET {assignments} WHERE id = $1 AND tenant = $2",
                                        vector_store_id, tenant, *[value for _, value in sets])
        return _count(status) > 0

    async def delete_store(self, vector_store_id: str, *, tenant: str) -> bool:
        """Delete the store with its file rows and batches (ON DELETE CASCADE)."""
        async with self._db.acquire("delete_vector_store") as conn:
            status = await conn.execute("DELETE FROM vector_stores WHERE id = $1 AND tenant = $2", vector_store_id,
                                        tenant)
        return _count(status) > 0

    # -- files -----------------------------------------------------------------------------------------------

    async def add_files(self, vector_store_id: str, created_at: int, files: Sequence[NewFile], *, tenant: str,
                        batch_id: str | None = None) -> list[int] | None:
        """Attach files (optionally as a new batch) in one transaction; their seqs, or None for an unknown store
        (or another tenant's). The store's row is locked first, so a delete of the store waits or wins, never
        half-applies."""
        async with self._db.transaction("add_vector_store_files") as conn:
            if await conn.fetchval("SELECT 1 FROM vector_stores WHERE id = $1 AND tenant = $2 FOR SHARE",
                                   vector_store_id, tenant) is None:
                return None
            seqs = await _attach(conn, vector_store_id, created_at, files, tenant)
            if batch_id is not None:
                await conn.execute("INSERT INTO vector_store_file_batches (id, vector_store_id, created_at) "
                                   "VALUES ($1, $2, $3)", batch_id, vector_store_id, created_at)
                await conn.execute("INSERT INTO vector_store_batch_files (batch_id, file_id) "
                                   "SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
                                   batch_id, list(dict.fromkeys(f.file_id for f in files)))
            return seqs

    async def get_file(self, vector_store_id: str, file_id: str, *, tenant: str) -> StoredVectorStoreFile | None:
        row = await self._db.fetch_row("get_vector_store_file", f"SELECT {_FILE_COLUMNS} FROM vector_store_files AS f "
                                       f"WHERE f.vector_store_id = $1 AND f.file_id = $2 AND {_owned(1, 3)}",
                                       vector_store_id, file_id, tenant)
        return _file(row) if row is not None else None

    async def current_seq(self, vector_store_id: str, file_id: str) -> int | None:
        """The seq of the file's row in the store now, None if it has none. Across tenants: workers only."""
        async with self._db.acquire("current_vector_store_file") as conn:
            found = await conn.fetchval("SELECT seq FROM vector_store_files WHERE vector_store_id = $1 "
                                        "AND file_id = $2", vector_store_id, file_id)
        return None if found is None else int(found)

    async def get_file_by_seq(self, seq: int) -> StoredVectorStoreFile | None:
        """Across tenants: workers only (ingestion)."""
        row = await self._db.fetch_row("get_vector_store_file",
                                       f"SELECT {_FILE_COLUMNS} FROM vector_store_files AS f WHERE f.seq = $1", seq)
        return _file(row) if row is not None else None

    async def list_files(self, vector_store_id: str, *, tenant: str, limit: int, order: str,
                         after: str | None = None, before: str | None = None, status: str | None = None,
                         batch_id: str | None = None) -> Page:
        """A page of a store's files (of one batch's files with ``batch_id``), optionally of one status; empty
        for another tenant's store."""
        check_page_args(limit, order)
        args: list[Any] = [vector_store_id, limit + 1, tenant]
        where = f"f.vector_store_id = $1 AND {_owned(1, 3)}"
        if batch_id is not None:
            args.append(batch_id)
            where += (" AND f.file_id IN (SELECT bf.file_id FROM vector_store_batch_files AS bf"
                      " JOIN vector_store_file_batches AS b ON b.id = bf.batch_id"
                      f" WHERE bf.batch_id = ${len(args)} AND b.vector_store_id = $1)")
        if status is not None:
            args.append(status)
            where += f" AND f.status = ${len(args)}"
        resolve = (f"SELECT seq FROM vector_store_files WHERE vector_store_id = $1 AND file_id = $2 "
                   f"AND {_owned(1, 3)}")
        async with self._db.acquire("list_vector_store_files") as conn:
            after_seq = await _cursor(conn, resolve, (vector_store_id, after, tenant), "after", after)
            before_seq = await _cursor(conn, resolve, (vector_store_id, before, tenant), "before", before)
            bounds, scan_ascending = page_bounds(order == "asc", after_seq, before_seq, args, "f.seq")
            rows = await conn.fetch(f"SELECT {_FILE_COLUMNS} FROM vector_store_files AS f WHERE {where} {bounds} "
                                    f"ORDER BY f.seq {'ASC' if scan_ascending else 'DESC'} LIMIT $2", *args)
        return _finish_page([_file(row) for row in rows], limit, backward=before is not None and after is None)

    async def set_file_attributes(self, vector_store_id: str, file_id: str, attributes: Mapping[str, Any], *,
                                  tenant: str) -> bool:
        async with self._db.acquire("set_vector_store_file_attributes") as conn:
            status = await conn.execute("UPDATE vector_store_files SET attributes = $3 "
                                        f"WHERE vector_store_id = $1 AND file_id = $2 AND {_owned(1, 4)}",
                                        vector_store_id, file_id, _json(dict(attributes)), tenant)
        return _count(status) > 0

    async def delete_file(self, vector_store_id: str, file_id: str, *, tenant: str) -> bool:
        async with self._db.acquire("delete_vector_store_file") as conn:
            status = await conn.execute("DELETE FROM vector_store_files WHERE vector_store_id = $1 AND file_id = $2 "
                                        f"AND {_owned(1, 3)}", vector_store_id, file_id, tenant)
        return _count(status) > 0

    async def delete_file_everywhere(self, file_id: str) -> list[str]:
        """Detach the file from every vector store holding it; the ids of those stores. Across tenants: workers
        only (run after the file itself was deleted by its owner or by expiry)."""
        async with self._db.acquire("delete_vector_store_file") as conn:
            rows = await conn.fetch("DELETE FROM vector_store_files WHERE file_id = $1 RETURNING vector_store_id",
                                    file_id)
        return sorted({str(row[0]) for row in rows})

    async def finish_file(self, seq: int, status: str, *, usage_bytes: int = 0,
                          last_error: Mapping[str, Any] | None = None, owner: str | None = None) -> bool:
        """Move one in-progress row to ``completed``/``failed``; False when that row is gone, no longer in
        progress, or (with ``owner``) claimed by another worker since, in which case nothing changes."""
        error = _json(dict(last_error)) if last_error is not None else None
        sql = ("UPDATE vector_store_files SET status = $2, usage_bytes = $3, last_error = $4, claimed_by = NULL, "
               "lease_until = NULL WHERE seq = $1 AND status = 'in_progress'")
        args: list[Any] = [seq, status, usage_bytes, error]
        if owner is not None:
            args.append(owner)
            sql += " AND claimed_by = $5"
        async with self._db.acquire("finish_vector_store_file") as conn:
            return _count(await conn.execute(sql, *args)) > 0

    async def in_progress_files(self) -> list[StoredVectorStoreFile]:
        """Every row still in progress, oldest first. Across tenants: workers only."""
        async with self._db.acquire("in_progress_vector_store_files") as conn:
            rows = await conn.fetch(f"SELECT {_FILE_COLUMNS} FROM vector_store_files AS f "
                                    "WHERE f.status = 'in_progress' ORDER BY f.seq")
        return [_file(row) for row in rows]

    async def has_files_to_ingest(self, *, unclaimed: bool) -> bool:
        """Whether a row is in progress (``unclaimed``: one nobody holds). Across tenants: workers only."""
        sql = "SELECT 1 FROM vector_store_files WHERE status = 'in_progress'"
        if unclaimed:
            sql += " AND (lease_until IS NULL OR lease_until < clock_timestamp())"
        async with self._db.acquire("vector_store_files_to_ingest") as conn:
            return await conn.fetchval(sql + " LIMIT 1") is not None

    # -- ingestion claims ------------------------------------------------------------------------------------

    async def claim_next(self, owner: str, lease_seconds: float, limit: int) -> list[StoredVectorStoreFile]:
        """Claim up to ``limit`` in-progress rows nobody holds (never claimed, or their lease has passed), oldest
        first, for ``lease_seconds``. Across tenants: workers only."""
        async with self._db.acquire("claim_vector_store_files") as conn:
            rows = await conn.fetch(_CLAIM_NEXT, owner, lease_seconds, limit)
        return sorted((_file(row) for row in rows), key=lambda row: row.seq)

    async def claim_file(self, seq: int, owner: str, lease_seconds: float) -> bool:
        """Claim (or renew the claim of) one in-progress row; False when another worker holds it or it is no
        longer in progress. Across tenants: workers only."""
        async with self._db.acquire("claim_vector_store_file") as conn:
            return _count(await conn.execute(_CLAIM, seq, owner, lease_seconds)) > 0

    async def release_claims(self, owner: str | None) -> int:
        """Give up every claim ``owner`` holds (a worker stopping cleanly), so another replica takes the rows at
        its next poll instead of after the lease. Across tenants: workers only."""
        async with self._db.acquire("release_vector_store_files") as conn:
            return _count(await conn.execute(
                "UPDATE vector_store_files SET claimed_by = NULL, lease_until = NULL "
                "WHERE claimed_by IS NOT NULL AND (claimed_by = $1 OR $1::text IS NULL) AND status = 'in_progress'",
                owner))

    # -- batches ---------------------------------------------------------------------------------------------

    async def get_batch(self, vector_store_id: str, batch_id: str, *, tenant: str) -> StoredFileBatch | None:
        row = await self._db.fetch_row("get_vector_store_file_batch",
                                       f"{_BATCH_SELECT} WHERE b.id = $1 AND b.vector_store_id = $2 "
                                       f"AND {_owned(2, 3)} GROUP BY b.seq", batch_id, vector_store_id, tenant)
        return _batch(row) if row is not None else None

    async def cancel_batch(self, vector_store_id: str, batch_id: str, *, tenant: str) -> bool:
        """Mark the batch's files still in progress ``cancelled``, and the batch cancelled if any were, in one
        transaction; False for an unknown batch (or another tenant's)."""
        async with self._db.transaction("cancel_vector_store_file_batch") as conn:
            found = await conn.fetchval("SELECT 1 FROM vector_store_file_batches WHERE id = $1 "
                                        f"AND vector_store_id = $2 AND {_owned(2, 3)} FOR UPDATE",
                                        batch_id, vector_store_id, tenant)
            if found is None:
                return False
            stopped = _count(await conn.execute(
                "UPDATE vector_store_files SET status = 'cancelled', claimed_by = NULL, lease_until = NULL "
                "WHERE vector_store_id = $1 AND status = 'in_progress' "
                "AND file_id IN (SELECT file_id FROM vector_store_batch_files WHERE batch_id = $2)",
                vector_store_id, batch_id))
            if stopped:
                await conn.execute("UPDATE vector_store_file_batches SET cancelled = true WHERE id = $1", batch_id)
            return True
