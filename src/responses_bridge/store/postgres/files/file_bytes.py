"""Uploaded files' bytes in PostgreSQL (:class:`~responses_bridge.store.file_bytes.FileBytes`): every replica reads
every file, whatever its own data directory holds.

A blob is rows of at most :data:`ROW_BYTES` in ``file_contents``, numbered from 0. Writing buffers one row and
inserts it as one statement; reading fetches one row per read. No transaction spans a file, so a slow client
never holds a connection of the pool between its chunks, and memory holds one row per upload or download.

A delete only marks the blob: a download that started before it reads to its end (as an open file on disk
does), and :meth:`PostgresFileBytes.collect` removes marked blobs once :data:`READ_GRACE_SECONDS` have passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ...file_ids import BLOB_OWNERS, ORPHAN_GRACE_SECONDS, POSTGRES_RECORD_BLOBS, STALE_UPLOAD_SECONDS, check_file_id
from ...records import KnownIds
from ..database import PostgresDatabase

if TYPE_CHECKING:
    from ..migrations import Connection

ROW_BYTES = 1 << 20
READ_GRACE_SECONDS = 3600.0
"""How long the bytes of a deleted file stay for downloads that began before the delete."""

_COLLECT = """
DELETE FROM file_blobs
WHERE deleted_at < clock_timestamp() - make_interval(secs => $1)
"""
_KEPT_ROWS = """
SELECT count(*) FILTER (WHERE upto <= $2), coalesce(max(upto) FILTER (WHERE upto <= $2), 0)
FROM (SELECT sum(octet_length(data)) OVER (ORDER BY seq) AS upto FROM file_contents WHERE file_id = $1) AS rows
"""
_EXTEND = """
INSERT INTO file_contents (file_id, seq, data)
SELECT $1, ($3 + row_number() OVER (ORDER BY parts.position, c.seq) - 1)::integer, c.data
FROM unnest($2::text[], $4::bigint[]) WITH ORDINALITY AS parts(file_id, bytes, position)
CROSS JOIN LATERAL (
    SELECT seq, data, sum(octet_length(data)) OVER (ORDER BY seq) AS upto
    FROM file_contents WHERE file_id = parts.file_id
) AS c
WHERE c.upto <= parts.bytes
"""
_OWNED = " UNION ALL ".join(f"SELECT 1 FROM {table} WHERE {column} = b.file_id"
                            for table, column in (*BLOB_OWNERS, POSTGRES_RECORD_BLOBS))
_SWEEP = f"""
DELETE FROM file_blobs AS b
WHERE deleted_at IS NULL AND (
    (NOT published AND started_at < clock_timestamp() - make_interval(secs => $1))
    OR (published AND started_at < clock_timestamp() - make_interval(secs => $2) AND NOT EXISTS ({_OWNED}))
)
"""


async def _rows_holding(conn: Connection, file_id: str, size: int) -> int:
    """How many of ``file_id``'s first rows hold its first ``size`` bytes; ``FileNotFoundError`` when no row ends
    there (fewer bytes, or not a blob this module wrote)."""
    count, upto = await conn.fetchrow(_KEPT_ROWS, file_id, size) or (0, 0)
    if int(upto) != size:
        raise FileNotFoundError(f"{file_id} holds no row ending at {size} bytes")
    return int(count)


class _Writer:
    def __init__(self, db: PostgresDatabase, file_id: str) -> None:
        self.file_id = file_id
        self._db = db
        self._buffer = bytearray()
        self._rows = 0
        self._size = 0
        self._published = False

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        self._size += len(chunk)
        while len(self._buffer) >= ROW_BYTES:
            await self._insert(bytes(self._buffer[:ROW_BYTES]))
            del self._buffer[:ROW_BYTES]

    async def _insert(self, data: bytes) -> None:
        async with self._db.acquire("write_file_bytes") as conn:
            await conn.execute("INSERT INTO file_contents (file_id, seq, data) VALUES ($1, $2, $3)",
                               self.file_id, self._rows, data)
        self._rows += 1

    async def publish(self) -> None:
        if self._buffer:
            await self._insert(bytes(self._buffer))
            self._buffer.clear()
        async with self._db.acquire("publish_file_bytes") as conn:
            await conn.execute("UPDATE file_blobs SET published = true, size = $2 WHERE file_id = $1",
                               self.file_id, self._size)
        self._published = True

    async def discard(self) -> None:
        self._buffer.clear()
        if not self._published:
            async with self._db.acquire("discard_file_bytes") as conn:
                await conn.execute("DELETE FROM file_blobs WHERE file_id = $1 AND NOT published", self.file_id)


class _Reader:
    def __init__(self, db: PostgresDatabase, file_id: str, size: int) -> None:
        self.size = size
        self._db = db
        self._file_id = file_id
        self._next_row = 0
        self._buffer = memoryview(b"")
        self._done = size == 0

    async def read(self, size: int) -> bytes:
        if not self._buffer and not self._done:
            async with self._db.acquire("read_file_bytes") as conn:
                data = await conn.fetchval("SELECT data FROM file_contents WHERE file_id = $1 AND seq = $2",
                                           self._file_id, self._next_row)
            self._next_row += 1
            if data is None:
                self._done = True
            else:
                self._buffer = memoryview(data)
        part, self._buffer = self._buffer[:size], self._buffer[size:]
        return bytes(part)

    async def aclose(self) -> None:
        self._buffer = memoryview(b"")
        self._done = True


class PostgresFileBytes:
    """:class:`~responses_bridge.store.file_bytes.FileBytes` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def writer(self, file_id: str) -> _Writer:
        async with self._db.acquire("start_file_bytes") as conn:
            await conn.execute("INSERT INTO file_blobs (file_id) VALUES ($1)", check_file_id(file_id))
        return _Writer(self._db, file_id)

    async def open(self, file_id: str) -> _Reader | None:
        async with self._db.acquire("open_file_bytes") as conn:
            size = await conn.fetchval("SELECT size FROM file_blobs WHERE file_id = $1 AND published "
                                       "AND deleted_at IS NULL", file_id)
        return None if size is None else _Reader(self._db, file_id, int(size))

    async def extend(self, file_id: str, kept: int, sources: Sequence[tuple[str, int]]) -> None:
        """One transaction, inside the database: ``file_id``'s rows past its first ``kept`` bytes deleted, and
        the rows holding each source's first bytes added after them, renumbered in order. A part is written in
        whole rows, so its own bytes end on a row's end (what a join cut short added after them is left out)."""
        blob_ids = [blob_id for blob_id, _count in sources]
        async with self._db.transaction("extend_file_bytes") as conn:
            rows = await conn.fetch("SELECT file_id FROM file_blobs WHERE file_id = ANY($1::text[]) AND "
                                    "published AND deleted_at IS NULL ORDER BY file_id FOR UPDATE",
                                    [file_id, *blob_ids])
            if {str(row[0]) for row in rows} != {file_id, *blob_ids}:
                raise FileNotFoundError(f"no bytes stored for one of {len(sources) + 1} blobs")
            kept_rows = await _rows_holding(conn, file_id, kept)
            for blob_id, count in sources:
                await _rows_holding(conn, blob_id, count)
            await conn.execute("DELETE FROM file_contents WHERE file_id = $1 AND seq >= $2", file_id, kept_rows)
            await conn.execute(_EXTEND, file_id, blob_ids, kept_rows, [count for _blob_id, count in sources])
            await conn.execute("UPDATE file_blobs SET size = $2 WHERE file_id = $1", file_id,
                               kept + sum(count for _blob_id, count in sources))

    @contextlib.asynccontextmanager
    async def local_copy(self, file_id: str) -> AsyncIterator[Path]:
        """The bytes copied row by row into a temporary file, removed when the block ends."""
        reader = await self.open(file_id)
        if reader is None:
            raise FileNotFoundError(f"no bytes stored for {file_id}")
        handle, name = await asyncio.to_thread(tempfile.mkstemp, prefix="responses-bridge-ingest-")
        path = Path(name)
        try:
            with os.fdopen(handle, "wb") as out:
                while chunk := await reader.read(ROW_BYTES):
                    await asyncio.to_thread(out.write, chunk)
            yield path
        finally:
            await reader.aclose()
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def remove(self, file_id: str) -> None:
        async with self._db.acquire("remove_file_bytes") as conn:
            await conn.execute("UPDATE file_blobs SET deleted_at = clock_timestamp() "
                               "WHERE file_id = $1 AND deleted_at IS NULL", file_id)

    async def sweep(self, known_ids: KnownIds) -> int:
        """Blobs of dead uploads and blobs no file row names, past their grace (the file rows are in this
        database, so ``known_ids`` is not needed: one statement decides). Across tenants: workers only."""
        async with self._db.acquire("sweep_file_bytes") as conn:
            status = await conn.execute(_SWEEP, STALE_UPLOAD_SECONDS, ORPHAN_GRACE_SECONDS)
        return int(status.rsplit(" ", 1)[-1])

    async def collect(self) -> int:
        """Deleted blobs past :data:`READ_GRACE_SECONDS`. Across tenants: workers only."""
        async with self._db.acquire("collect_file_bytes") as conn:
            status = await conn.execute(_COLLECT, READ_GRACE_SECONDS)
        return int(status.rsplit(" ", 1)[-1])
