"""Uploads and their parts on PostgreSQL (:class:`~responses_bridge.store.base_uploads.UploadStore`), shared by every
replica, with the rules of store/sqlite/files/uploads.py.

Every write that checks something locks the upload's row first (``FOR UPDATE``): two parts stored at once on two
replicas, or a part and the completion, go one after the other and the second sees the first's rows. The tenant's
stored bytes are then checked under its quota lock (store/postgres/quota.py), always taken after the upload's row,
never before, so the two locks are never waited for in opposite orders. A completion's claim is written under the
same row lock: of two completions at once, on any replicas, the second sees the first's claim and is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...base_uploads import (
    CLAIM_COLUMNS,
    CompletionClaim,
    StoredUpload,
    StoredUploadPart,
    UploadCompleting,
    UploadNotPending,
    UploadPartsFull,
    UploadTooManyParts,
    charged,
    claimable,
    held_claim,
    pending_upload,
)
from ...records import StoredFile
from ..database import PostgresDatabase
from ..quota import check_stored_bytes

if TYPE_CHECKING:
    from ..migrations import Connection

_UPLOAD = "id, created_at, expires_at, bytes, filename, purpose, mime_type, file_expires_after, status, file_id"
_PART = "id, upload_id, created_at, bytes, blob_id"


def _upload(row: Any) -> StoredUpload:
    return StoredUpload(id=row[0], created_at=int(row[1]), expires_at=int(row[2]), bytes=int(row[3]),
                        filename=row[4], purpose=row[5], mime_type=row[6],
                        file_expires_after=None if row[7] is None else int(row[7]), status=row[8], file_id=row[9])


def _part(row: Any) -> StoredUploadPart:
    return StoredUploadPart(id=row[0], upload_id=row[1], created_at=int(row[2]), bytes=int(row[3]), blob_id=row[4])


async def _pending(conn: Connection, upload_id: str, tenant: str, now: int) -> StoredUpload:
    """The tenant's upload, pending at ``now``, its row locked to the end of the transaction."""
    row = await conn.fetchrow(f"SELECT {_UPLOAD} FROM uploads WHERE id = $1 AND tenant = $2 FOR UPDATE",
                              upload_id, tenant)
    return pending_upload(None if row is None else _upload(row), upload_id, now)


async def _claim(conn: Connection, upload_id: str) -> CompletionClaim | None:
    return held_claim(await conn.fetchrow(f"SELECT {CLAIM_COLUMNS} FROM uploads WHERE id = $1", upload_id))


async def _set_claim(conn: Connection, upload_id: str, claim: CompletionClaim | None) -> None:
    await conn.execute("UPDATE uploads SET completing_claim = $2, completing_until = $3, completing_bytes = $4, "
                       "completing_blob = $5 WHERE id = $1", upload_id,
                       *((None, None, 0, None) if claim is None else
                         (claim.token, claim.until, claim.bytes, claim.blob_id)))


async def _take_parts(conn: Connection, upload_id: str) -> list[str]:
    """Delete the upload's parts' rows and its claim; their blob ids, and the claim's join's."""
    rows = await conn.fetch("DELETE FROM upload_parts WHERE upload_id = $1 RETURNING blob_id", upload_id)
    held = await _claim(conn, upload_id)
    await _set_claim(conn, upload_id, None)
    return [str(row[0]) for row in rows] + ([held.blob_id] if held is not None and held.blob_id is not None else [])


class PostgresUploadStore:
    """:class:`UploadStore` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def create_upload(self, upload: StoredUpload, *, tenant: str) -> None:
        async with self._db.acquire("create_upload") as conn:
            await conn.execute(f"INSERT INTO uploads ({_UPLOAD}, tenant) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
                               "$10, $11)", upload.id, upload.created_at, upload.expires_at, upload.bytes,
                               upload.filename, upload.purpose, upload.mime_type, upload.file_expires_after,
                               upload.status, upload.file_id, tenant)

    async def get_upload(self, upload_id: str, *, tenant: str) -> StoredUpload | None:
        row = await self._db.fetch_row("get_upload",
                                       f"SELECT {_UPLOAD} FROM uploads WHERE id = $1 AND tenant = $2", upload_id,
                                       tenant)
        return _upload(row) if row is not None else None

    async def add_part(self, part: StoredUploadPart, *, tenant: str, now: int, max_parts_bytes: int,
                       max_parts: int, max_stored_bytes: int | None) -> None:
        async with self._db.transaction("add_upload_part") as conn:
            await _pending(conn, part.upload_id, tenant, now)
            count, held = await conn.fetchrow("SELECT count(*), coalesce(sum(bytes), 0) FROM upload_parts "
                                              "WHERE upload_id = $1", part.upload_id) or (0, 0)
            if int(count) >= max_parts:
                raise UploadTooManyParts(max_parts)
            if int(held) + part.bytes > max_parts_bytes:
                raise UploadPartsFull(max_parts_bytes)
            await check_stored_bytes(conn, tenant, now, charged(part.bytes), max_stored_bytes)
            await conn.execute(f"INSERT INTO upload_parts ({_PART}) VALUES ($1, $2, $3, $4, $5)", part.id,
                               part.upload_id, part.created_at, part.bytes, part.blob_id)

    async def parts(self, upload_id: str, *, tenant: str) -> list[StoredUploadPart]:
        async with self._db.acquire("upload_parts") as conn:
            rows = await conn.fetch(f"SELECT {_PART} FROM upload_parts WHERE upload_id IN "
                                    "(SELECT id FROM uploads WHERE id = $1 AND tenant = $2) ORDER BY seq",
                                    upload_id, tenant)
        return [_part(row) for row in rows]

    async def claim_completion(self, upload_id: str, claim: CompletionClaim, *, tenant: str, now: int,
                               max_stored_bytes: int | None) -> str | None:
        async with self._db.transaction("claim_upload_completion") as conn:
            await _pending(conn, upload_id, tenant, now)
            held = await _claim(conn, upload_id)
            claimable(held, now)
            lapsed = 0 if held is None else held.bytes
            await check_stored_bytes(conn, tenant, now, claim.bytes - lapsed, max_stored_bytes)
            await _set_claim(conn, upload_id, claim)
        return None if held is None else held.blob_id

    async def release_completion(self, upload_id: str, token: str, *, tenant: str) -> None:
        async with self._db.acquire("release_upload_completion") as conn:
            await conn.execute("UPDATE uploads SET completing_claim = NULL, completing_until = NULL, "
                               "completing_bytes = 0, completing_blob = NULL "
                               "WHERE id = $1 AND tenant = $2 AND completing_claim = $3", upload_id, tenant, token)

    async def complete_upload(self, upload_id: str, file: StoredFile, *, tenant: str, now: int, token: str,
                              max_stored_bytes: int | None) -> list[str]:
        async with self._db.transaction("complete_upload") as conn:
            await _pending(conn, upload_id, tenant, now)
            held = await _claim(conn, upload_id)
            if held is None or held.token != token:
                raise UploadCompleting(0 if held is None else held.until)
            await _set_claim(conn, upload_id, None)  # its join is the file now, not a blob to remove
            blobs = await _take_parts(conn, upload_id)
            await check_stored_bytes(conn, tenant, now, file.bytes, max_stored_bytes)
            await conn.execute("INSERT INTO files (id, created_at, bytes, filename, purpose, expires_at, tenant) "
                               "VALUES ($1, $2, $3, $4, $5, $6, $7)", file.id, file.created_at, file.bytes,
                               file.filename, file.purpose, file.expires_at, tenant)
            await conn.execute("UPDATE uploads SET status = 'completed', file_id = $1 WHERE id = $2", file.id,
                               upload_id)
        return blobs

    async def cancel_upload(self, upload_id: str, *, tenant: str, now: int) -> list[str]:
        async with self._db.transaction("cancel_upload") as conn:
            try:
                await _pending(conn, upload_id, tenant, now)
            except UploadNotPending as ended:
                if ended.status == "cancelled":
                    return []
                raise
            claimable(await _claim(conn, upload_id), now)
            blobs = await _take_parts(conn, upload_id)
            await conn.execute("UPDATE uploads SET status = 'cancelled' WHERE id = $1", upload_id)
        return blobs

    async def expire_uploads(self, now: int, forget_before: int, limit: int) -> tuple[int, list[str]]:
        async with self._db.transaction("expire_uploads") as conn:
            # SKIP LOCKED: an upload another replica's purge, or a request, holds is left for the next round
            expired = await conn.fetch("UPDATE uploads SET status = 'expired' WHERE id IN (SELECT id FROM uploads "
                                       "WHERE status = 'pending' AND expires_at <= $1 LIMIT $2 FOR UPDATE SKIP "
                                       "LOCKED) RETURNING id", now, limit)
            ids = [str(row[0]) for row in expired]
            rows = await conn.fetch("DELETE FROM upload_parts WHERE upload_id = ANY($1::text[]) RETURNING blob_id",
                                    ids) if ids else []
            joins = await conn.fetch("SELECT completing_blob FROM uploads WHERE id = ANY($1::text[]) AND "
                                     "completing_blob IS NOT NULL", ids) if ids else []
            if ids:
                await conn.execute("UPDATE uploads SET completing_claim = NULL, completing_until = NULL, "
                                   "completing_bytes = 0, completing_blob = NULL WHERE id = ANY($1::text[])", ids)
            status = await conn.execute("DELETE FROM uploads WHERE id IN (SELECT id FROM uploads WHERE status != "
                                        "'pending' AND expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                                        forget_before, limit)
        return len(ids) + int(status.rsplit(" ", 1)[-1]), [str(row[0]) for row in [*rows, *joins]]
