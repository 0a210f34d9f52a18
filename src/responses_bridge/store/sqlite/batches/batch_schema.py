"""The Batch API's tables on SQLite (batches.py), as on PostgreSQL (store/postgres/batches/batch_schema.py)."""

from __future__ import annotations

from collections.abc import Sequence

BATCH_TABLES: Sequence[str] = [
    # One row per batch: its object (``body``), its status, the counters its finished lines add to, its lease.
    # ``seq`` orders the tenant's list (newest first).
    """
    CREATE TABLE batches (
        seq              INTEGER PRIMARY KEY,
        id               TEXT NOT NULL UNIQUE,
        tenant           TEXT NOT NULL,
        status           TEXT NOT NULL,
        body             TEXT NOT NULL,
        total            INTEGER NOT NULL DEFAULT 0,
        completed        INTEGER NOT NULL DEFAULT 0,
        failed           INTEGER NOT NULL DEFAULT 0,
        input_tokens     INTEGER NOT NULL DEFAULT 0,
        cached_tokens    INTEGER NOT NULL DEFAULT 0,
        output_tokens    INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        rerun            INTEGER NOT NULL DEFAULT 0,
        owner            TEXT,
        lease_until      REAL
    )
    """,
    "CREATE INDEX batches_listed ON batches (tenant, seq)",
    "CREATE INDEX batches_unfinished ON batches (status, seq) WHERE status IN "
    "('validating', 'in_progress', 'finalizing', 'cancelling')",
    # One row per line of a validated input: ``state`` 0 pending, 1 started (sent upstream), 2 done (``output`` is
    # its line of the output file, or of the error file when ``failed``).
    """
    CREATE TABLE batch_lines (
        batch_id  TEXT NOT NULL,
        idx       INTEGER NOT NULL,
        custom_id TEXT NOT NULL,
        body      BLOB NOT NULL,
        state     INTEGER NOT NULL DEFAULT 0,
        failed    INTEGER NOT NULL DEFAULT 0,
        output    BLOB,
        PRIMARY KEY (batch_id, idx)
    ) WITHOUT ROWID
    """,
]
