"""The Uploads API's tables on SQLite (versions 18 and 19; PostgreSQL's 17 and 18 are the same): an upload, what the
client declared of its file, its completion claim, and its parts, each part's bytes a blob in the files' bytes
storage under ``blob_id`` until the upload is completed, cancelled or expired (uploads.py). Parts are
listed in rowid order."""

from __future__ import annotations

UPLOAD_TABLES: list[str] = [
    """
    CREATE TABLE uploads (
        id                 TEXT PRIMARY KEY,
        tenant             TEXT NOT NULL,
        created_at         INTEGER NOT NULL,
        expires_at         INTEGER NOT NULL,
        bytes              INTEGER NOT NULL,
        filename           TEXT NOT NULL,
        purpose            TEXT NOT NULL,
        mime_type          TEXT NOT NULL,
        file_expires_after INTEGER,
        status             TEXT NOT NULL,
        file_id            TEXT
    )
    """,
    "CREATE INDEX uploads_expiring ON uploads(status, expires_at)",
    """
    CREATE TABLE upload_parts (
        id         TEXT NOT NULL UNIQUE,
        upload_id  TEXT NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        bytes      INTEGER NOT NULL,
        blob_id    TEXT NOT NULL UNIQUE
    )
    """,
    "CREATE INDEX upload_parts_of ON upload_parts(upload_id)",
]

UPLOAD_CLAIM_COLUMNS: list[str] = [
    # Version 19 (PostgreSQL's 18): an upload's completion claim (store/base_uploads.py: one completion at a time,
    # its join's bytes counted in the tenant's stored bytes, lapsing at completing_until); NULL claim: none.
    "ALTER TABLE uploads ADD COLUMN completing_claim TEXT",
    "ALTER TABLE uploads ADD COLUMN completing_until INTEGER",
    "ALTER TABLE uploads ADD COLUMN completing_bytes INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE uploads ADD COLUMN completing_blob TEXT",
]
