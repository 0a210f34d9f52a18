"""The containers' tables on PostgreSQL (version 13), as on SQLite: a container row per code interpreter
container, a row per file naming its blob in ``file_blobs`` (so every replica lays out the same files)."""

from __future__ import annotations

from collections.abc import Sequence

CONTAINER_MIGRATIONS: list[tuple[int, Sequence[str]]] = [
    (
        13,
        [
            """
            CREATE TABLE containers (
                id              text PRIMARY KEY,
                seq             bigint GENERATED ALWAYS AS IDENTITY,
                tenant          text NOT NULL,
                name            text NOT NULL,
                created_at      bigint NOT NULL,
                last_active_at  bigint NOT NULL,
                expires_minutes bigint NOT NULL,
                memory_limit    text
            )
            """,
            "CREATE INDEX containers_listed ON containers (tenant, seq)",
            "CREATE INDEX containers_expiry ON containers ((last_active_at + expires_minutes * 60))",
            """
            CREATE TABLE container_files (
                id           text PRIMARY KEY,
                seq          bigint GENERATED ALWAYS AS IDENTITY,
                container_id text NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
                path         text NOT NULL,
                bytes        bigint NOT NULL,
                created_at   bigint NOT NULL,
                source       text NOT NULL,
                blob_id      text NOT NULL UNIQUE,
                UNIQUE (container_id, path)
            )
            """,
        ],
    ),
]
