"""The Uploads API's tables on PostgreSQL (version 17), as on SQLite (store/sqlite/upload_schema.py, version 18): an
upload, what the client declared of its file, and its parts, each part's bytes in ``file_blobs`` under ``blob_id``
until the upload is completed, cancelled or expired (store/postgres/uploads.py). Parts are listed in ``seq`` order."""

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
]
