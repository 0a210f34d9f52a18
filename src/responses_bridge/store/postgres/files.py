"""Metadata of uploaded files (the Files API) on PostgreSQL: the :class:`~responses_bridge.store.files.FileStore`
every replica shares. The bytes are in the same database (store/postgres/file_bytes.py).

As on SQLite, every read takes the current time and leaves out expired rows; pages follow ``seq``, the creation
order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..files import StoredFile, UnknownCursor
from .database import PostgresDatabase

_COLUMNS = "id, created_at, bytes, filename, purpose, expires_at"
_LIVE = "(expires_at IS NULL OR expires_at > $1)"


def _row(row: Any) -> StoredFile:
    return StoredFile(id=row[0], created_at=int(row[1]), bytes=int(row[2]), filename=row[3], purpose=row[4],
                      expires_at=None if row[5] is None else int(row[5]))


class PostgresFileStore:
    """:class:`~responses_bridge.store.files.FileStore` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def add_file(self, file: StoredFile) -> None:
        async with self._db.acquire("add_file") as conn:
            await conn.execute(f"INSERT INTO files ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
                               file.id, file.created_at, file.bytes, file.filename, file.purpose, file.expires_at)

    async def get_file(self, file_id: str, now: int) -> StoredFile | None:
        async with self._db.acquire("get_file") as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM files WHERE {_LIVE} AND id = $2", now, file_id)
        return _row(row) if row is not None else None

    async def list_files(self, *, now: int, purpose: str | None, after: str | None, limit: int,
                         order: str) -> tuple[list[StoredFile], bool]:
        """A page in creation order, ``limit`` rows and whether more follow. Raises :class:`UnknownCursor` when
        ``after`` is not a live file."""
        ascending = order == "asc"
        args: list[Any] = [now, limit + 1]
        sql = f"SELECT {_COLUMNS} FROM files WHERE {_LIVE}"
        if purpose is not None:
            args.append(purpose)
            sql += f" AND purpose = ${len(args)}"
        async with self._db.acquire("list_files") as conn:
            if after is not None:
                after_seq = await conn.fetchval(f"SELECT seq FROM files WHERE {_LIVE} AND id = $2", now, after)
                if after_seq is None:
                    raise UnknownCursor(after)
                args.append(after_seq)
                sql += f" AND seq {'>' if ascending else '<'} ${len(args)}"
            sql += f" ORDER BY seq {'ASC' if ascending else 'DESC'} LIMIT $2"
            rows = await conn.fetch(sql, *args)
        files = [_row(row) for row in rows]
        return files[:limit], len(files) > limit

    async def delete_file(self, file_id: str) -> bool:
        async with self._db.acquire("delete_file") as conn:
            status = await conn.execute("DELETE FROM files WHERE id = $1", file_id)
        return _count(status) > 0

    async def expired_files(self, now: int, limit: int) -> list[str]:
        """Across tenants: workers only (the purge)."""
        async with self._db.acquire("expired_files") as conn:
            rows = await conn.fetch("SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= $1 "
                                    "ORDER BY expires_at LIMIT $2", now, limit)
        return [str(row[0]) for row in rows]

    async def known_ids(self, file_ids: Sequence[str]) -> set[str]:
        """Which of ``file_ids`` have a row (expired or not). Across tenants: workers only (the sweep)."""
        if not file_ids:
            return set()
        async with self._db.acquire("known_file_ids") as conn:
            rows = await conn.fetch("SELECT id FROM files WHERE id = ANY($1::text[])", list(file_ids))
        return {str(row[0]) for row in rows}


def _count(status: str) -> int:
    """The row count of a command tag (``DELETE 1``, ``UPDATE 0``)."""
    return int(status.rsplit(" ", 1)[-1])
