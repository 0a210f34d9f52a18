"""Metadata of uploaded files (the Files API) on the response store's SQLite database: same file, same connections.

Only metadata lives here; the bytes are on disk, named by the file's id (services/files/files.py). Every read takes the
current time and leaves out expired rows, so an expired file is never returned even before the purge that
deletes it has run. Every file belongs to a tenant, matched in the queries of every method that takes one. The
tenant's stored bytes, which ``max_stored_bytes`` bounds, are its files' and its container files' together
(quota.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ...file_ids import BLOB_OWNERS, SQLITE_RECORD_BLOBS
from ...records import StoredFile, UnknownCursor
from ..reads import read_row
from ..responses import SQLiteResponseStore
from ..transactions import transaction
from .quota import STORED_BYTES, check_stored_bytes

_COLUMNS = "id, created_at, bytes, filename, purpose, expires_at"
_LIVE = "(expires_at IS NULL OR expires_at > :now)"


def _row(row: Sequence[Any]) -> StoredFile:
    return StoredFile(id=row[0], created_at=int(row[1]), bytes=int(row[2]), filename=row[3], purpose=row[4],
                      expires_at=None if row[5] is None else int(row[5]))


class SQLiteFileStore:
    """:class:`FileStore` sharing a :class:`SQLiteResponseStore`'s connections."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    async def add_file(self, file: StoredFile, *, tenant: str, max_stored_bytes: int | None) -> None:
        def add(conn: sqlite3.Connection) -> None:
            with transaction(conn):  # the sum and the insert see the same files: no upload slips between
                check_stored_bytes(conn, tenant, file.created_at, file.bytes, max_stored_bytes)
                conn.execute(f"INSERT INTO files ({_COLUMNS}, tenant) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (file.id, file.created_at, file.bytes, file.filename, file.purpose, file.expires_at,
                              tenant))

        await self._db.run_write("add_file", add)

    async def get_file(self, file_id: str, now: int, *, tenant: str) -> StoredFile | None:
        row = await read_row(self._db, f"SELECT {_COLUMNS} FROM files WHERE id = :id AND tenant = :tenant AND {_LIVE}",
                             {"id": file_id, "tenant": tenant, "now": now})
        return _row(row) if row is not None else None

    async def get_file_any_tenant(self, file_id: str, now: int) -> StoredFile | None:
        row = await read_row(self._db, f"SELECT {_COLUMNS} FROM files WHERE id = :id AND {_LIVE}",
                             {"id": file_id, "now": now})
        return _row(row) if row is not None else None

    async def stored_bytes(self, now: int, *, tenant: str) -> int:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(STORED_BYTES, {"tenant": tenant, "now": now}))
        return int(rows[0][0])

    async def list_files(self, *, tenant: str, now: int, purpose: str | None, after: str | None, limit: int,
                         order: str) -> tuple[list[StoredFile], bool]:
        """A page of the tenant's files in creation order (rowid: also within one second), ``limit`` rows and
        whether more follow. Raises :class:`UnknownCursor` when ``after`` is not a live file of the tenant."""
        ascending = order == "asc"
        params: dict[str, object] = {"now": now, "fetch": limit + 1, "purpose": purpose, "after": after,
                                     "tenant": tenant}
        sql = f"SELECT {_COLUMNS} FROM files WHERE tenant = :tenant AND {_LIVE}"
        if purpose is not None:
            sql += " AND purpose = :purpose"
        async with self._db.reading() as conn:
            if after is not None:
                found = list(await conn.execute_fetchall(
                    f"SELECT rowid FROM files WHERE id = :after AND tenant = :tenant AND {_LIVE}", params))
                if not found:
                    raise UnknownCursor(after)
                params["after_rowid"] = found[0][0]
                sql += " AND rowid > :after_rowid" if ascending else " AND rowid < :after_rowid"
            sql += f" ORDER BY rowid {'ASC' if ascending else 'DESC'} LIMIT :fetch"
            rows = list(await conn.execute_fetchall(sql, params))
        files = [_row(row) for row in rows]
        return files[:limit], len(files) > limit

    async def delete_file(self, file_id: str, *, tenant: str) -> bool:
        async with self._db.writing() as conn, conn.execute("DELETE FROM files WHERE id = ? AND tenant = ?",
                                                            (file_id, tenant)) as cursor:
            return cursor.rowcount > 0

    async def delete_expired_file(self, file_id: str, now: int) -> bool:
        sql = "DELETE FROM files WHERE id = ? AND expires_at IS NOT NULL AND expires_at <= ?"
        async with self._db.writing() as conn, conn.execute(sql, (file_id, now)) as cursor:
            return cursor.rowcount > 0

    async def expired_files(self, now: int, limit: int) -> list[str]:
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(
                "SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at LIMIT ?",
                (now, limit))
        return [str(row[0]) for row in rows]

    async def known_ids(self, file_ids: Sequence[str]) -> set[str]:
        """Which of ``file_ids`` have a row (expired or not), or are the bytes of another row that keeps them in the
        same place (:data:`~responses_bridge.store.file_ids.BLOB_OWNERS`): the files on disk that are no orphans."""
        known: set[str] = set()
        owners = (*BLOB_OWNERS, SQLITE_RECORD_BLOBS)
        batch_size = 999 // len(owners)  # within SQLite's bound-parameter limit
        async with self._db.reading() as conn:
            for start in range(0, len(file_ids), batch_size):
                batch = list(file_ids[start:start + batch_size])
                marks = ", ".join("?" * len(batch))
                sql = " UNION ALL ".join(f"SELECT {column} FROM {table} WHERE {column} IN ({marks})"
                                         for table, column in owners)
                rows = await conn.execute_fetchall(sql, batch * len(owners))
                known.update(str(row[0]) for row in rows)
        return known
