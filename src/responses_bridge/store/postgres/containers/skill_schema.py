"""The skills' tables on PostgreSQL (version 15), as on SQLite (store/sqlite/migrations.py, version 16): a skill,
its numbered versions (each a zip in ``file_blobs`` under ``blob_id``, so every replica lays out the same bytes)
and the skills a container was made with (its own copies, deleted with it)."""

from __future__ import annotations

from collections.abc import Sequence

SKILL_MIGRATIONS: list[tuple[int, Sequence[str]]] = [
    (
        15,
        [
            """
            CREATE TABLE skills (
                id              text PRIMARY KEY,
                seq             bigint GENERATED ALWAYS AS IDENTITY,
                tenant          text NOT NULL,
                name            text NOT NULL,
                description     text NOT NULL,
                created_at      bigint NOT NULL,
                default_version bigint NOT NULL,
                version_counter bigint NOT NULL
            )
            """,
            "CREATE INDEX skills_listed ON skills (tenant, seq)",
            """
            CREATE TABLE skill_versions (
                id          text PRIMARY KEY,
                skill_id    text NOT NULL REFERENCES skills (id) ON DELETE CASCADE,
                version     bigint NOT NULL,
                name        text NOT NULL,
                description text NOT NULL,
                created_at  bigint NOT NULL,
                bytes       bigint NOT NULL,
                blob_id     text NOT NULL UNIQUE,
                UNIQUE (skill_id, version)
            )
            """,
            """
            CREATE TABLE container_skills (
                container_id text NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
                position     bigint NOT NULL,
                name         text NOT NULL,
                description  text NOT NULL,
                bytes        bigint NOT NULL,
                blob_id      text NOT NULL UNIQUE,
                PRIMARY KEY (container_id, position)
            )
            """,
        ],
    ),
]
