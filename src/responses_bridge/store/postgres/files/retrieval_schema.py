"""The PostgreSQL schema of files, file bytes, vector stores and their chunk index (migrations 10 onwards).

Appended to the PostgreSQL migration list (migrations.py) after the core tables; the same append-only rule holds.

- ``files``: metadata of uploads; ``seq`` orders pages in creation order (also within one second).
- ``file_blobs`` / ``file_contents``: the bytes of uploads, in rows of at most 1 MiB, in the database itself. A
  replica with its own data directory (a pod's emptyDir) must still serve every file, and a shared volume
  (ReadWriteMany) is what many clusters do not have, while every replica already reaches the database. A blob is
  written while its upload streams in (one small statement per row, never a long transaction), published when
  the upload completes, and removed by the sweep once it was deleted a grace period ago (a download that started
  before the delete reads to its end) or once it was left by a dead upload.
- ``vector_stores``, ``vector_store_files``, batches: as the SQLite tables (store/sqlite/files/vector_store_schema.py),
  plus the ingestion claim (``claimed_by``, ``lease_until``): the replica ingesting a file holds it, renews the lease
  while it works, and a file whose holder died is claimed again by another replica once the lease has passed.
- ``vector_store_chunks``: the chunk index. ``embedding`` is a pgvector ``vector`` of any dimensions (one
  deployment's embedder decides them); the HNSW index of each dimension count is an expression index made on
  first use (chunks.py), partial on ``dims``. ``tsv`` is the chunk's full-text vector (GIN).
"""

from __future__ import annotations

from collections.abc import Sequence

RETRIEVAL_MIGRATIONS: list[tuple[int, Sequence[str]]] = [
    (
        10,
        [
            """
            CREATE TABLE files (
                seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                id         text NOT NULL UNIQUE,
                tenant     text NOT NULL DEFAULT '',
                created_at bigint NOT NULL,
                bytes      bigint NOT NULL,
                filename   text NOT NULL,
                purpose    text NOT NULL,
                expires_at bigint
            )
            """,
            "CREATE INDEX files_listed ON files (tenant, seq)",
            "CREATE INDEX files_expires_at ON files (expires_at) WHERE expires_at IS NOT NULL",
            # one row per blob: its state; the bytes are in file_contents under the same id
            """
            CREATE TABLE file_blobs (
                file_id    text PRIMARY KEY,
                started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                published  boolean NOT NULL DEFAULT false,
                size       bigint,
                deleted_at timestamptz
            )
            """,
            """
            CREATE TABLE file_contents (
                file_id text NOT NULL REFERENCES file_blobs (file_id) ON DELETE CASCADE,
                seq     integer NOT NULL,
                data    bytea NOT NULL,
                PRIMARY KEY (file_id, seq)
            )
            """,
            # uploads are often compressed already: store the rows as they are, without a compression attempt
            "ALTER TABLE file_contents ALTER COLUMN data SET STORAGE EXTERNAL",
        ],
    ),
    (
        11,
        [
            """
            CREATE TABLE vector_stores (
                seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                id             text NOT NULL UNIQUE,
                tenant         text NOT NULL DEFAULT '',
                created_at     bigint NOT NULL,
                name           text NOT NULL,
                description    text,
                metadata       bytea NOT NULL,
                expires_after  bytea,
                last_active_at bigint NOT NULL,
                embedder       text
            )
            """,
            "CREATE INDEX vector_stores_listed ON vector_stores (tenant, seq)",
            """
            CREATE TABLE vector_store_files (
                seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                vector_store_id text NOT NULL REFERENCES vector_stores (id) ON DELETE CASCADE,
                file_id         text NOT NULL,
                created_at      bigint NOT NULL,
                status          text NOT NULL
                                CHECK (status IN ('in_progress', 'completed', 'failed', 'cancelled')),
                last_error      bytea,
                attributes      bytea NOT NULL,
                chunking        bytea NOT NULL,
                usage_bytes     bigint NOT NULL DEFAULT 0,
                claimed_by      text,
                lease_until     timestamptz,
                UNIQUE (vector_store_id, file_id)
            )
            """,
            "CREATE INDEX vector_store_files_status ON vector_store_files (vector_store_id, status)",
            "CREATE INDEX vector_store_files_file ON vector_store_files (file_id)",
            "CREATE INDEX vector_store_files_in_progress ON vector_store_files (seq) WHERE status = 'in_progress'",
            """
            CREATE TABLE vector_store_file_batches (
                seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                id              text NOT NULL UNIQUE,
                vector_store_id text NOT NULL REFERENCES vector_stores (id) ON DELETE CASCADE,
                created_at      bigint NOT NULL,
                cancelled       boolean NOT NULL DEFAULT false
            )
            """,
            """
            CREATE TABLE vector_store_batch_files (
                batch_id text NOT NULL REFERENCES vector_store_file_batches (id) ON DELETE CASCADE,
                file_id  text NOT NULL,
                PRIMARY KEY (batch_id, file_id)
            )
            """,
        ],
    ),
    (
        12,
        [
            "CREATE EXTENSION IF NOT EXISTS vector",
            # per store: the dimensions of its vectors, its chunk count (exact scan or HNSW, chunks.py) and a
            # generation moved by every change of its files or their attributes (the per-process file cache)
            """
            CREATE TABLE vector_store_chunk_stores (
                vector_store_id text PRIMARY KEY,
                dims            integer,
                chunks          bigint NOT NULL DEFAULT 0,
                generation      bigint NOT NULL DEFAULT 0
            )
            """,
            """
            CREATE TABLE vector_store_chunk_files (
                vector_store_id text NOT NULL,
                file_id         text NOT NULL,
                filename        text NOT NULL,
                attributes      bytea NOT NULL,
                PRIMARY KEY (vector_store_id, file_id)
            )
            """,
            """
            CREATE TABLE vector_store_chunks (
                id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                vector_store_id text NOT NULL,
                file_id         text NOT NULL,
                position        integer NOT NULL,
                text            text NOT NULL,
                dims            integer NOT NULL,
                embedding       vector NOT NULL,
                tsv             tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
            )
            """,
            "CREATE INDEX vector_store_chunks_file ON vector_store_chunks (vector_store_id, file_id, position)",
            "CREATE INDEX vector_store_chunks_tsv ON vector_store_chunks USING gin (tsv)",
        ],
    ),
]
"""Versions 10 (files and their bytes), 11 (vector stores), 12 (the chunk index)."""
