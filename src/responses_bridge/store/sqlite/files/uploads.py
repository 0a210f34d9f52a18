"""Uploads and their parts (:class:`~responses_bridge.store.base_uploads.UploadStore`) on the response store's
SQLite database: same file, same connections.

Every write that checks something (the upload still pending, its parts' total, the tenant's stored bytes) runs in
one ``BEGIN IMMEDIATE`` transaction with what it writes: SQLite has one writer at a time, so two parts stored at
once, or a part and the completion, see each other's rows; a completion's claim is taken the same way (one
``BEGIN IMMEDIATE`` reading the claim and writing the new one), so of two completions at once one is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

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
from ..reads import read_row
from ..responses import SQLiteResponseStore
from ..transactions import transaction
from .quota import check_stored_bytes

_UPLOAD = ("id, created_at, expires_at, bytes, filename, purpose, mime_type, file_expires_after, status, file_id")
_PART = "id, upload_id, created_at, bytes, blob_id"


def _upload(row: Sequence[Any]) -> StoredUpload:
    return StoredUpload(id=row[0], created_at=int(row[1]), expires_at=int(row[2]), bytes=int(row[3]),
                        filename=row[4], purpose=row[5], mime_type=row[6],
                        file_expires_after=None if row[7] is None else int(row[7]), status=row[8], file_id=row[9])


def _part(row: Sequence[Any]) -> StoredUploadPart:
    return StoredUploadPart(id=row[0], upload_id=row[1], created_at=int(row[2]), bytes=int(row[3]), blob_id=row[4])


def _pending(conn: sqlite3.Connection, upload_id: str, tenant: str, now: int) -> StoredUpload:
    row = conn.execute(f"SELECT {_UPLOAD} FROM uploads WHERE id = ? AND tenant = ?", (upload_id, tenant)).fetchone()
    return pending_upload(None if row is None else _upload(row), upload_id, now)


def _claim(conn: sqlite3.Connection, upload_id: str) -> CompletionClaim | None:
    return held_claim(conn.execute(f"SELECT {CLAIM_COLUMNS} FROM uploads WHERE id = ?", (upload_id,)).fetchone())


def _set_claim(conn: sqlite3.Connection, upload_id: str, claim: CompletionClaim | None) -> None:
    conn.execute("UPDATE uploads SET completing_claim = ?, completing_until = ?, completing_bytes = ?, "
                 "completing_blob = ? WHERE id = ?",
                 (None, None, 0, None, upload_id) if claim is None else
                 (claim.token, claim.until, claim.bytes, claim.blob_id, upload_id))


def _take_parts(conn: sqlite3.Connection, upload_id: str) -> list[str]:
    """Delete the upload's parts' rows and its claim; their blob ids, and the claim's join's."""
    blobs = [str(row[0]) for row in conn.execute("SELECT blob_id FROM upload_parts WHERE upload_id = ?",
                                                 (upload_id,))]
    conn.execute("DELETE FROM upload_parts WHERE upload_id = ?", (upload_id,))
    held = _claim(conn, upload_id)
    if held is not None and held.blob_id is not None:
        blobs.append(held.blob_id)
    _set_claim(conn, upload_id, None)
    return blobs


class SQLiteUploadStore:
    """:class:`UploadStore` sharing a :class:`SQLiteResponseStore`'s connections."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    async def create_upload(self, upload: StoredUpload, *, tenant: str) -> None:
        async with self._db.writing() as conn:
            await conn.execute(
                f"INSERT INTO uploads ({_UPLOAD}, tenant) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (upload.id, upload.created_at, upload.expires_at, upload.bytes, upload.filename, upload.purpose,
                 upload.mime_type, upload.file_expires_after, upload.status, upload.file_id, tenant))

    async def get_upload(self, upload_id: str, *, tenant: str) -> StoredUpload | None:
        row = await read_row(self._db, f"SELECT {_UPLOAD} FROM uploads WHERE id = ? AND tenant = ?",
                             (upload_id, tenant))
        return _upload(row) if row is not None else None

    async def add_part(self, part: StoredUploadPart, *, tenant: str, now: int, max_parts_bytes: int,
                       max_parts: int, max_stored_bytes: int | None) -> None:
        def add(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                _pending(conn, part.upload_id, tenant, now)
                count, held = conn.execute("SELECT count(*), coalesce(sum(bytes), 0) FROM upload_parts "
                                           "WHERE upload_id = ?", (part.upload_id,)).fetchone()
                if int(count) >= max_parts:
                    raise UploadTooManyParts(max_parts)
                if int(held) + part.bytes > max_parts_bytes:
                    raise UploadPartsFull(max_parts_bytes)
                check_stored_bytes(conn, tenant, now, charged(part.bytes), max_stored_bytes)
                conn.execute(f"INSERT INTO upload_parts ({_PART}) VALUES (?, ?, ?, ?, ?)",
                             (part.id, part.upload_id, part.created_at, part.bytes, part.blob_id))

        await self._db.run_write("add_upload_part", add)

    async def parts(self, upload_id: str, *, tenant: str) -> list[StoredUploadPart]:
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(
                f"SELECT {_PART} FROM upload_parts WHERE upload_id IN "
                "(SELECT id FROM uploads WHERE id = ? AND tenant = ?) ORDER BY rowid", (upload_id, tenant))
        return [_part(row) for row in rows]

    async def claim_completion(self, upload_id: str, claim: CompletionClaim, *, tenant: str, now: int,
                               max_stored_bytes: int | None) -> str | None:
        def take(conn: sqlite3.Connection) -> str | None:
            with transaction(conn):
                _pending(conn, upload_id, tenant, now)
                held = _claim(conn, upload_id)
                claimable(held, now)
                lapsed = 0 if held is None else held.bytes
                check_stored_bytes(conn, tenant, now, claim.bytes - lapsed, max_stored_bytes)
                _set_claim(conn, upload_id, claim)
            return None if held is None else held.blob_id

        return await self._db.run_write("claim_upload_completion", take)

    async def release_completion(self, upload_id: str, token: str, *, tenant: str) -> None:
        async with self._db.writing() as conn:
            await conn.execute("UPDATE uploads SET completing_claim = NULL, completing_until = NULL, "
                               "completing_bytes = 0, completing_blob = NULL "
                               "WHERE id = ? AND tenant = ? AND completing_claim = ?", (upload_id, tenant, token))

    async def complete_upload(self, upload_id: str, file: StoredFile, *, tenant: str, now: int, token: str,
                              max_stored_bytes: int | None) -> list[str]:
        def complete(conn: sqlite3.Connection) -> list[str]:
            with transaction(conn):
                _pending(conn, upload_id, tenant, now)
                held = _claim(conn, upload_id)
                if held is None or held.token != token:
                    raise UploadCompleting(0 if held is None else held.until)
                _set_claim(conn, upload_id, None)  # its join is the file now, not a blob to remove
                blobs = _take_parts(conn, upload_id)
                check_stored_bytes(conn, tenant, now, file.bytes, max_stored_bytes)
                conn.execute("INSERT INTO files (id, created_at, bytes, filename, purpose, expires_at, tenant) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", (file.id, file.created_at, file.bytes, file.filename,
                                                              file.purpose, file.expires_at, tenant))
                conn.execute("UPDATE uploads SET status = 'completed', file_id = ? WHERE id = ?", (file.id, upload_id))
            return blobs

        return await self._db.run_write("complete_upload", complete)

    async def cancel_upload(self, upload_id: str, *, tenant: str, now: int) -> list[str]:
        def cancel(conn: sqlite3.Connection) -> list[str]:
            with transaction(conn):
                try:
                    _pending(conn, upload_id, tenant, now)
                except UploadNotPending as ended:
                    if ended.status == "cancelled":
                        return []
                    raise
                claimable(_claim(conn, upload_id), now)
                blobs = _take_parts(conn, upload_id)
                conn.execute("UPDATE uploads SET status = 'cancelled' WHERE id = ?", (upload_id,))
            return blobs

        return await self._db.run_write("cancel_upload", cancel)

    async def expire_uploads(self, now: int, forget_before: int, limit: int) -> tuple[int, list[str]]:
        def expire(conn: sqlite3.Connection) -> tuple[int, list[str]]:
            with transaction(conn):
                expired = [str(row[0]) for row in conn.execute(
                    "SELECT id FROM uploads WHERE status = 'pending' AND expires_at <= ? LIMIT ?", (now, limit))]
                blobs: list[str] = []
                for upload_id in expired:
                    blobs += _take_parts(conn, upload_id)
                    conn.execute("UPDATE uploads SET status = 'expired' WHERE id = ?", (upload_id,))
                forgotten = conn.execute(
                    "DELETE FROM uploads WHERE id IN (SELECT id FROM uploads WHERE status != 'pending' AND "
                    "expires_at < ? LIMIT ?)", (forget_before, limit)).rowcount
            return len(expired) + forgotten, blobs

        return await self._db.run_write("expire_uploads", expire)
