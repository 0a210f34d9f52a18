"""The Uploads API's tables on PostgreSQL (versions 17 and 18), as on SQLite (store/sqlite/files/upload_schema.py,
versions 18 and 19): an upload, what the client declared of its file, its completion claim, and its parts, each part's
bytes in ``file_blobs`` under ``blob_id`` until the upload is completed, cancelled or expired
(uploads.py). Parts are listed in ``seq`` order."""

from __future__ import annotations

from collections.abc import Sequence

UPLOAD_MIGRATIONS: list[tuple[int, Sequence[str]]] = [
    (
        17,
        [
            """
            CREATE TABLE uploads (
                id                 text PRIMARY KEY,
                tenant             text NOT NULL,
                created_at         bigint NOT NULL,
                expires_at         bigint NOT NULL,
                bytes              bigint NOT NULL,
                filename           text NOT NULL,
                purpose            text NOT NULL,
                mime_type          text NOT NULL,
                file_expires_after bigint,
                status             text NOT NULL,
                file_id            text
            )
            """,
            "CREATE INDEX uploads_expiring ON uploads (status, expires_at)",
            """
            CREATE TABLE upload_parts (
                id         text PRIMARY KEY,
                seq        bigint GENERATED ALWAYS AS IDENTITY,
                upload_id  text NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
                created_at bigint NOT NULL,
                bytes      bigint NOT NULL,
                blob_id    text NOT NULL UNIQUE
            )
            """,
            "CREATE INDEX upload_parts_of ON upload_parts (upload_id, seq)",
        ],
    ),
    (
        18,
        [
            # An upload's completion claim, as SQLite's version 19 (store/base_uploads.py: one completion at a
            # time across replicas, its join's bytes counted in the tenant's stored bytes, lapsing at
            # completing_until); NULL claim: none.
            "ALTER TABLE uploads ADD COLUMN completing_claim text",
            "ALTER TABLE uploads ADD COLUMN completing_until bigint",
            "ALTER TABLE uploads ADD COLUMN completing_bytes bigint NOT NULL DEFAULT 0",
            "ALTER TABLE uploads ADD COLUMN completing_blob text",
        ],
    ),
]
