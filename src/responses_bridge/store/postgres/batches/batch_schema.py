"""The Batch API's tables on PostgreSQL (batches.py), as on SQLite (store/sqlite/batches/batch_schema.py)."""

from __future__ import annotations

from collections.abc import Sequence

BATCH_TABLES: Sequence[str] = [
    """
    CREATE TABLE batches (
        seq              BIGSERIAL PRIMARY KEY,
        id               TEXT NOT NULL UNIQUE,
        tenant           TEXT NOT NULL,
        status           TEXT NOT NULL,
        body             BYTEA NOT NULL,
        total            BIGINT NOT NULL DEFAULT 0,
        completed        BIGINT NOT NULL DEFAULT 0,
        failed           BIGINT NOT NULL DEFAULT 0,
        input_tokens     BIGINT NOT NULL DEFAULT 0,
        cached_tokens    BIGINT NOT NULL DEFAULT 0,
        output_tokens    BIGINT NOT NULL DEFAULT 0,
        reasoning_tokens BIGINT NOT NULL DEFAULT 0,
        rerun            BIGINT NOT NULL DEFAULT 0,
        owner            TEXT,
        lease_until      DOUBLE PRECISION
    )
    """,
    "CREATE INDEX batches_listed ON batches (tenant, seq)",
    "CREATE INDEX batches_unfinished ON batches (status, seq) WHERE status IN "
    "('validating', 'in_progress', 'finalizing', 'cancelling')",
    """
    CREATE TABLE batch_lines (
        batch_id  TEXT NOT NULL,
        idx       INTEGER NOT NULL,
        custom_id TEXT NOT NULL,
        body      BYTEA NOT NULL,
        state     SMALLINT NOT NULL DEFAULT 0,
        failed    BOOLEAN NOT NULL DEFAULT false,
        output    BYTEA,
        PRIMARY KEY (batch_id, idx)
    )
    """,
]
