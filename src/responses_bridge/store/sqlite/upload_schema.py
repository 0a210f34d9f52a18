"""The Uploads API's tables on SQLite (version 18; PostgreSQL's version 17 is the same): an upload, what the client
declared of its file, and its parts, each part's bytes a blob in the files' bytes storage under ``blob_id`` until the
upload is completed, cancelled or expired (store/sqlite/uploads.py). Parts are listed in rowid order."""

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
