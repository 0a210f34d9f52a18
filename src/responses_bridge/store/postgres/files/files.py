"""Metadata of uploaded files (the Files API) on PostgreSQL: the :class:`~responses_bridge.store.files.FileStore`
every replica shares. The bytes are in the same database (file_bytes.py).

As on SQLite, every read takes the current time and leaves out expired rows; pages follow ``seq``, the creation
order. Every file belongs to a tenant, matched in the statement of every method that takes one.

The stored-bytes limit holds across replicas: :meth:`PostgresFileStore.add_file` takes the tenant's quota lock
(store/postgres/quota.py) before it sums the tenant's stored bytes (its live files and its container files: one
budget) and inserts, so two uploads of one tenant finishing at once on two replicas, or an upload and a container
file, are checked one after the other (other tenants' writes do not wait).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...file_ids import BLOB_OWNERS, POSTGRES_RECORD_BLOBS
from ...records import StoredFile, UnknownCursor
from ..database import PostgresDatabase
from ..quota import STORED_BYTES, check_stored_bytes
from ..sql import pg_texts

_COLUMNS = "id, created_at, bytes, filename, purpose, expires_at"
_LIVE = "(expires_at IS NULL OR expires_at > $1)"


def _row(row: Any) -> StoredFile:
    return StoredFile(id=row[0], created_at=int(row[1]), bytes=int(row[2]), filename=row[3], purpose=row[4],
                      expires_at=None if row[5] is None else int(row[5]))


class PostgresFileStore:
    """:class:`~responses_bridge.store.files.FileStore` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def add_file(self, file: StoredFile, *, tenant: str, max_stored_bytes: int | None) -> None:
        """Insert ``file`` as ``tenant``'s; with ``max_stored_bytes``, the tenant's stored bytes are summed and
        checked in the inserting transaction, under the tenant's quota lock (:class:`StorageLimitExceeded`,
        nothing written, when over)."""
        async with self._db.transaction("add_file") as conn:
            await check_stored_bytes(conn, tenant, file.created_at, file.bytes, max_stored_bytes)
            await conn.execute(f"INSERT INTO files ({_COLUMNS}, tenant) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                               file.id, file.created_at, file.bytes, file.filename, file.purpose, file.expires_at,
                               tenant)

    async def get_file(self, file_id: str, now: int, *, tenant: str) -> StoredFile | None:
        row = await self._db.fetch_row("get_file",
                                       f"SELECT {_COLUMNS} FROM files WHERE {_LIVE} AND id = $2 AND tenant = $3",
                                       now, file_id, tenant)
        return _row(row) if row is not None else None

    async def get_file_any_tenant(self, file_id: str, now: int) -> StoredFile | None:
        """A live file whoever owns it. Across tenants: workers only (ingestion of an attached file)."""
        row = await self._db.fetch_row("get_file",
                                       f"SELECT {_COLUMNS} FROM files WHERE {_LIVE} AND id = $2", now, file_id)
        return _row(row) if row is not None else None

    async def stored_bytes(self, now: int, *, tenant: str) -> int:
        async with self._db.acquire("stored_file_bytes") as conn:
            return int(await conn.fetchval(STORED_BYTES, now, tenant))

    async def list_files(self, *, tenant: str, now: int, purpose: str | None, after: str | None, limit: int,
                         order: str) -> tuple[list[StoredFile], bool]:
        """A page of the tenant's files in creation order, ``limit`` rows and whether more follow. Raises
        :class:`UnknownCursor` when ``after`` is not a live file of the tenant."""
        ascending = order == "asc"
        args: list[Any] = [now, limit + 1, tenant]
        sql = f"SELECT {_COLUMNS} FROM files WHERE tenant = $3 AND {_LIVE}"
        if purpose is not None:
            args.append(purpose)
            sql += f" AND purpose = ${len(args)}"
        async with self._db.acquire("list_files") as conn:
            if after is not None:
                after_seq = await conn.fetchval(f"SELECT seq FROM files WHERE {_LIVE} AND id = $2 AND tenant = $3",
                                                now, after, tenant)
                if after_seq is None:
                    raise UnknownCursor(after)
                args.append(after_seq)
                sql += f" AND seq {'>' if ascending else '<'} ${len(args)}"
            sql += f" ORDER BY seq {'ASC' if ascending else 'DESC'} LIMIT $2"
            rows = await conn.fetch(sql, *args)
        files = [_row(row) for row in rows]
        return files[:limit], len(files) > limit

    async def delete_file(self, file_id: str, *, tenant: str) -> bool:
        async with self._db.acquire("delete_file") as conn:
            status = await conn.execute("DELETE FROM files WHERE id = $1 AND tenant = $2", file_id, tenant)
        return _count(status) > 0

    async def delete_expired_file(self, file_id: str, now: int) -> bool:
        """Delete the row if it has expired by ``now``. Across tenants: workers only (the expiry purge)."""
        async with self._db.acquire("delete_expired_file") as conn:
            status = await conn.execute("DELETE FROM files WHERE id = $1 AND expires_at IS NOT NULL "
                                        "AND expires_at <= $2", file_id, now)
        return _count(status) > 0

    async def expired_files(self, now: int, limit: int) -> list[str]:
        """Across tenants: workers only (the purge)."""
        async with self._db.acquire("expired_files") as conn:
            rows = await conn.fetch("SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= $1 "
                                    "ORDER BY expires_at LIMIT $2", now, limit)
        return [str(row[0]) for row in rows]

    async def known_ids(self, file_ids: Sequence[str]) -> set[str]:
        """Which of ``file_ids`` have a row (expired or not), or are the bytes another row keeps (``BLOB_OWNERS``).
        Across tenants: workers only (the sweep)."""
        if not file_ids:
            return set()
        sql = " UNION ALL ".join(f"SELECT {column} FROM {table} WHERE {column} = ANY($1::text[])"
                                 for table, column in (*BLOB_OWNERS, POSTGRES_RECORD_BLOBS))
        async with self._db.acquire("known_file_ids") as conn:
            rows = await conn.fetch(sql, pg_texts(file_ids))
        return {str(row[0]) for row in rows}


def _count(status: str) -> int:
    """The row count of a command tag (``DELETE 1``, ``UPDATE 0``)."""
    return int(status.rsplit(" ", 1)[-1])
