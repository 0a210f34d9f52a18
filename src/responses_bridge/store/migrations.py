"""Versioned schema for the SQLite store.

The schema version lives in ``PRAGMA user_version`` (part of the database header, so it commits and rolls back
with the migration itself). Migrations are append-only: an existing entry is never edited once released, because
databases in the wild were built from it; a change is a new ``(version, statements)`` entry at the end.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence

import aiosqlite

Migration = tuple[int, Sequence[str]]

MIGRATIONS: list[Migration] = [
    (
        1,
        [
            # previous_response_id is deliberately NOT a foreign key: a chain may point at a response that was
            # deleted (or never stored), and history simply starts after that missing link.
            """
            CREATE TABLE responses (
                id                   TEXT PRIMARY KEY,
                created_at           INTEGER NOT NULL,
                status               TEXT,
                model                TEXT,
                previous_response_id TEXT,
                response             BLOB NOT NULL
            )
            """,
            "CREATE INDEX responses_previous_response_id ON responses(previous_response_id)",
            """
            CREATE TABLE response_items (
                response_id TEXT NOT NULL REFERENCES responses(id) ON DELETE CASCADE,
                kind        TEXT NOT NULL CHECK (kind IN ('input', 'output')),
                position    INTEGER NOT NULL,
                item_id     TEXT,
                item        BLOB NOT NULL,
                PRIMARY KEY (response_id, kind, position)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX response_items_item_id ON response_items(response_id, item_id)",
            # The write path: inserting into this view saves a response and replaces its items in one statement.
            """
            CREATE VIEW response_writes (id, created_at, status, model, previous_response_id, response,
                                         input_items, output_items)
            AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL WHERE 0
            """,
            """
            CREATE TRIGGER response_writes_insert INSTEAD OF INSERT ON response_writes
            BEGIN
                INSERT INTO responses (id, created_at, status, model, previous_response_id, response)
                VALUES (NEW.id, NEW.created_at, NEW.status, NEW.model, NEW.previous_response_id, NEW.response)
                ON CONFLICT (id) DO UPDATE SET
                    created_at = excluded.created_at, status = excluded.status, model = excluded.model,
                    previous_response_id = excluded.previous_response_id, response = excluded.response;
                DELETE FROM response_items WHERE response_id = NEW.id;
                INSERT INTO response_items (response_id, kind, position, item_id, item)
                SELECT NEW.id, 'input', key, json_extract(value, '$.id'), value FROM json_each(NEW.input_items);
                INSERT INTO response_items (response_id, kind, position, item_id, item)
                SELECT NEW.id, 'output', key, json_extract(value, '$.id'), value FROM json_each(NEW.output_items);
            END
            """,
        ],
    ),
]

LATEST_VERSION: int = MIGRATIONS[-1][0]


async def schema_version(conn: aiosqlite.Connection) -> int:
    rows = await conn.execute_fetchall("PRAGMA user_version")
    return int(next(iter(rows))[0])


def _check_known(found: int, latest: int) -> None:
    """Refuse databases written by a newer bridge: silently using them could corrupt data we don't understand."""
    if found > latest:
        raise RuntimeError(
            f"response store schema version {found} is newer than the newest version this bridge knows ({latest}); "
            "upgrade responses-bridge or point it at another database"
        )


async def migrate(conn: aiosqlite.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database up to the newest version and return that version.

    ``conn`` must be in autocommit mode (``isolation_level=None``) because the transaction is managed here.
    All pending migrations run in one ``BEGIN IMMEDIATE`` transaction, so a crash leaves the old version intact,
    and the version is re-read after taking the write lock so two processes opening the same fresh file at once
    don't both try to create the tables.
    """
    latest = migrations[-1][0] if migrations else 0
    _check_known(await schema_version(conn), latest)
    await conn.execute("BEGIN IMMEDIATE")
    try:
        current = await schema_version(conn)
        _check_known(current, latest)
        for version, statements in migrations:
            if version <= current:
                continue
            for statement in statements:
                await conn.execute(statement)
            # PRAGMA takes no bound parameters; version is an int from our own table, never user input.
            await conn.execute(f"PRAGMA user_version = {int(version)}")
            current = version
        await conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            await conn.execute("ROLLBACK")
        raise
    return current
