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
    (
        2,
        [
            # Conversations: items are ordered by ``seq``, handed out from the conversation's own counter, so an
            # append is one statement whatever its size and never reads the items table.
            """
            CREATE TABLE conversations (
                id         TEXT PRIMARY KEY,
                created_at INTEGER NOT NULL,
                metadata   TEXT NOT NULL,
                next_seq   INTEGER NOT NULL DEFAULT 0
            )
            """,
            """
            CREATE TABLE conversation_items (
                conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                seq             INTEGER NOT NULL,
                item_id         TEXT,
                item            BLOB NOT NULL,
                PRIMARY KEY (conversation_id, seq)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX conversation_items_item_id ON conversation_items(conversation_id, item_id)",
            # Appending items: one INSERT into this view (items as a JSON array); unknown conversation -> ABORT.
            """
            CREATE VIEW conversation_item_writes (conversation_id, items)
            AS SELECT NULL, NULL WHERE 0
            """,
            """
            CREATE TRIGGER conversation_item_writes_insert INSTEAD OF INSERT ON conversation_item_writes
            BEGIN
                SELECT RAISE(ABORT, 'conversation_not_found')
                WHERE NOT EXISTS (SELECT 1 FROM conversations WHERE id = NEW.conversation_id);
                INSERT INTO conversation_items (conversation_id, seq, item_id, item)
                SELECT NEW.conversation_id,
                       (SELECT next_seq FROM conversations WHERE id = NEW.conversation_id) + key,
                       json_extract(value, '$.id'), value
                FROM json_each(NEW.items);
                UPDATE conversations SET next_seq = next_seq + json_array_length(NEW.items)
                WHERE id = NEW.conversation_id;
            END
            """,
            # Prompts: a prompt and its immutable versions. default_version NULL means "the latest".
            """
            CREATE TABLE prompts (
                id              TEXT PRIMARY KEY,
                created_at      INTEGER NOT NULL,
                latest_version  INTEGER NOT NULL,
                default_version INTEGER
            )
            """,
            """
            CREATE TABLE prompt_versions (
                prompt_id  TEXT NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
                version    INTEGER NOT NULL,
                created_at INTEGER NOT NULL,
                body       TEXT NOT NULL,
                PRIMARY KEY (prompt_id, version)
            ) WITHOUT ROWID
            """,
            # Creating a prompt (row + version 1) in one statement.
            "CREATE VIEW prompt_writes (id, created_at, body) AS SELECT NULL, NULL, NULL WHERE 0",
            """
            CREATE TRIGGER prompt_writes_insert INSTEAD OF INSERT ON prompt_writes
            BEGIN
                INSERT INTO prompts (id, created_at, latest_version, default_version)
                VALUES (NEW.id, NEW.created_at, 1, NULL);
                INSERT INTO prompt_versions (prompt_id, version, created_at, body)
                VALUES (NEW.id, 1, NEW.created_at, NEW.body);
            END
            """,
            # A new version in one statement: expected_version (NULL = don't care) must still be the latest.
            """
            CREATE VIEW prompt_version_writes (prompt_id, expected_version, created_at, body)
            AS SELECT NULL, NULL, NULL, NULL WHERE 0
            """,
            """
            CREATE TRIGGER prompt_version_writes_insert INSTEAD OF INSERT ON prompt_version_writes
            BEGIN
                SELECT RAISE(ABORT, 'prompt_not_found')
                WHERE NOT EXISTS (SELECT 1 FROM prompts WHERE id = NEW.prompt_id);
                SELECT RAISE(ABORT, 'prompt_version_conflict')
                WHERE NEW.expected_version IS NOT NULL
                  AND NEW.expected_version <> (SELECT latest_version FROM prompts WHERE id = NEW.prompt_id);
                UPDATE prompts SET latest_version = latest_version + 1 WHERE id = NEW.prompt_id;
                INSERT INTO prompt_versions (prompt_id, version, created_at, body)
                SELECT NEW.prompt_id, latest_version, NEW.created_at, NEW.body FROM prompts WHERE id = NEW.prompt_id;
            END
            """,
        ],
    ),
    (
        3,
        [
            # The event stream of each background response, for ``GET /v1/responses/{id}?stream=true`` and
            # ``starting_after``: one row per event, written in batches while the response runs. Not a foreign key
            # (a batch may land after the response was deleted); the trigger below removes them with it.
            """
            CREATE TABLE response_events (
                response_id     TEXT NOT NULL,
                sequence_number INTEGER NOT NULL,
                event           BLOB NOT NULL,
                PRIMARY KEY (response_id, sequence_number)
            ) WITHOUT ROWID
            """,
            """
            CREATE TRIGGER responses_delete_events AFTER DELETE ON responses
            BEGIN
                DELETE FROM response_events WHERE response_id = OLD.id;
            END
            """,
            "CREATE INDEX responses_status ON responses(status) WHERE status IN ('queued', 'in_progress')",
        ],
    ),
    (
        4,
        # Every table holding JSON blobs becomes a rowid table with its key in a separate (small) index. In a
        # WITHOUT ROWID table the whole row is the b-tree key, and interior pages hold copies of keys: when a
        # page next to a 60 MB row split, SQLite copied that row's 60 MB into the parent, so each insert sorting
        # next to it cost ~50 ms and a 50,000-item save held the one writer for minutes. In a rowid table the
        # blob lives only in its leaf cell (and overflow pages); splits move a pointer, and the indexes hold
        # only short keys. Writes now go row by row from Python (store/sqlite.py), so the JSON-array views are
        # dropped; the prompt views (their triggers name prompt_versions) and the events trigger are recreated
        # unchanged.
        [
            "DROP VIEW response_writes",
            "DROP VIEW conversation_item_writes",
            "DROP VIEW prompt_writes",
            "DROP VIEW prompt_version_writes",
            "DROP TRIGGER responses_delete_events",
            """
            CREATE TABLE response_items_v4 (
                response_id TEXT NOT NULL REFERENCES responses(id) ON DELETE CASCADE,
                kind        TEXT NOT NULL CHECK (kind IN ('input', 'output')),
                position    INTEGER NOT NULL,
                item_id     TEXT,
                item        BLOB NOT NULL
            )
            """,
            """
            INSERT INTO response_items_v4 (response_id, kind, position, item_id, item)
            SELECT response_id, kind, position, item_id, item FROM response_items ORDER BY response_id, kind, position
            """,
            "DROP TABLE response_items",
            "ALTER TABLE response_items_v4 RENAME TO response_items",
            # No (response_id, item_id) index any more: its entries land at random places, which made a 50,000-item
            # save take about twice as long on the one writer; an input_items cursor is found by scanning that
            # response's own rows instead (a read, off the writer).
            "CREATE UNIQUE INDEX response_items_order ON response_items(response_id, kind, position)",
            """
            CREATE TABLE conversation_items_v4 (
                conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                seq             INTEGER NOT NULL,
                item_id         TEXT,
                item            BLOB NOT NULL
            )
            """,
            """
            INSERT INTO conversation_items_v4 (conversation_id, seq, item_id, item)
            SELECT conversation_id, seq, item_id, item FROM conversation_items ORDER BY conversation_id, seq
            """,
            "DROP TABLE conversation_items",
            "ALTER TABLE conversation_items_v4 RENAME TO conversation_items",
            "CREATE UNIQUE INDEX conversation_items_order ON conversation_items(conversation_id, seq)",
            "CREATE INDEX conversation_items_item_id ON conversation_items(conversation_id, item_id)",
            """
            CREATE TABLE prompt_versions_v4 (
                prompt_id  TEXT NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
                version    INTEGER NOT NULL,
                created_at INTEGER NOT NULL,
                body       TEXT NOT NULL
            )
            """,
            """
            INSERT INTO prompt_versions_v4 (prompt_id, version, created_at, body)
            SELECT prompt_id, version, created_at, body FROM prompt_versions ORDER BY prompt_id, version
            """,
            "DROP TABLE prompt_versions",
            "ALTER TABLE prompt_versions_v4 RENAME TO prompt_versions",
            "CREATE UNIQUE INDEX prompt_versions_order ON prompt_versions(prompt_id, version)",
            "CREATE VIEW prompt_writes (id, created_at, body) AS SELECT NULL, NULL, NULL WHERE 0",
            """
            CREATE TRIGGER prompt_writes_insert INSTEAD OF INSERT ON prompt_writes
            BEGIN
                INSERT INTO prompts (id, created_at, latest_version, default_version)
                VALUES (NEW.id, NEW.created_at, 1, NULL);
                INSERT INTO prompt_versions (prompt_id, version, created_at, body)
                VALUES (NEW.id, 1, NEW.created_at, NEW.body);
            END
            """,
            """
            CREATE VIEW prompt_version_writes (prompt_id, expected_version, created_at, body)
            AS SELECT NULL, NULL, NULL, NULL WHERE 0
            """,
            """
            CREATE TRIGGER prompt_version_writes_insert INSTEAD OF INSERT ON prompt_version_writes
            BEGIN
                SELECT RAISE(ABORT, 'prompt_not_found')
                WHERE NOT EXISTS (SELECT 1 FROM prompts WHERE id = NEW.prompt_id);
                SELECT RAISE(ABORT, 'prompt_version_conflict')
                WHERE NEW.expected_version IS NOT NULL
                  AND NEW.expected_version <> (SELECT latest_version FROM prompts WHERE id = NEW.prompt_id);
                UPDATE prompts SET latest_version = latest_version + 1 WHERE id = NEW.prompt_id;
                INSERT INTO prompt_versions (prompt_id, version, created_at, body)
                SELECT NEW.prompt_id, latest_version, NEW.created_at, NEW.body FROM prompts WHERE id = NEW.prompt_id;
            END
            """,
            """
            CREATE TABLE response_events_v4 (
                response_id     TEXT NOT NULL,
                sequence_number INTEGER NOT NULL,
                event           BLOB NOT NULL
            )
            """,
            """
            INSERT INTO response_events_v4 (response_id, sequence_number, event)
            SELECT response_id, sequence_number, event FROM response_events ORDER BY response_id, sequence_number
            """,
            "DROP TABLE response_events",
            "ALTER TABLE response_events_v4 RENAME TO response_events",
            "CREATE UNIQUE INDEX response_events_order ON response_events(response_id, sequence_number)",
            """
            CREATE TRIGGER responses_delete_events AFTER DELETE ON responses
            BEGIN
                DELETE FROM response_events WHERE response_id = OLD.id;
            END
            """,
        ],
    ),
    (
        5,
        [
            # Uploaded files (the Files API): metadata only; the bytes live on disk next to the database, in
            # ``files/<id>`` (store/files.py). A rowid table: rowid is the creation order pages are listed in.
            # expires_at NULL: kept until deleted.
            """
            CREATE TABLE files (
                id         TEXT NOT NULL UNIQUE,
                created_at INTEGER NOT NULL,
                bytes      INTEGER NOT NULL,
                filename   TEXT NOT NULL,
                purpose    TEXT NOT NULL,
                expires_at INTEGER
            )
            """,
            "CREATE INDEX files_purpose ON files(purpose)",
            "CREATE INDEX files_expires_at ON files(expires_at) WHERE expires_at IS NOT NULL",
        ],
    ),
    (
        6,
        [
            # The chunk index of vector stores (store/chunks.py). Each store gets a number; its chunks' ids are
            # number << 32 plus a counter, so one store's chunks are one rowid range, which FTS5 and the primary
            # key search without touching other stores' rows. The generation moves with every change of chunks,
            # attributes_generation with every change of a file's attributes, so a process's in-memory copies
            # of a store's vectors and file attributes know when they are stale.
            """
            CREATE TABLE vector_store_chunk_stores (
                vector_store_id TEXT PRIMARY KEY,
                number          INTEGER NOT NULL UNIQUE,
                generation      INTEGER NOT NULL,
                attributes_generation INTEGER NOT NULL DEFAULT 0
            )
            """,
            """
            CREATE TABLE vector_store_chunk_files (
                vector_store_id TEXT NOT NULL,
                file_id         TEXT NOT NULL,
                filename        TEXT NOT NULL,
                attributes      TEXT NOT NULL,
                PRIMARY KEY (vector_store_id, file_id)
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE vector_store_chunks (
                id              INTEGER PRIMARY KEY,
                vector_store_id TEXT NOT NULL,
                file_id         TEXT NOT NULL,
                position        INTEGER NOT NULL,
                text            TEXT NOT NULL,
                vector          BLOB NOT NULL
            )
            """,
            "CREATE INDEX vector_store_chunks_file ON vector_store_chunks(vector_store_id, file_id, position)",
            # BM25 keyword search over the chunks' text, kept in step by triggers (external content: the text
            # is stored once, in vector_store_chunks).
            """
            CREATE VIRTUAL TABLE vector_store_chunks_fts USING fts5(
                text, content='vector_store_chunks', content_rowid='id', tokenize='porter unicode61'
            )
            """,
            """
            CREATE TRIGGER vector_store_chunks_fts_insert AFTER INSERT ON vector_store_chunks
            BEGIN
                INSERT INTO vector_store_chunks_fts (rowid, text) VALUES (NEW.id, NEW.text);
            END
            """,
            """
            CREATE TRIGGER vector_store_chunks_fts_delete AFTER DELETE ON vector_store_chunks
            BEGIN
                INSERT INTO vector_store_chunks_fts (vector_store_chunks_fts, rowid, text)
                VALUES ('delete', OLD.id, OLD.text);
            END
            """,
        ],
    ),
    (
        7,
        # Vector stores (OpenAI's Vector Stores API): the stores, the files attached to each with their ingestion
        # status, and file batches. Counts, usage and status are never stored: they are aggregated from the file
        # rows on every read, so they cannot drift from the files. ``seq`` (the rowid) orders pages and breaks
        # ties between equal created_at; a row re-added after a delete gets a new seq, which is how a stale
        # ingestion job finds out its row is gone. Chunks live in the chunk index, not here.
        [
            """
            CREATE TABLE vector_stores (
                seq            INTEGER PRIMARY KEY,
                id             TEXT NOT NULL UNIQUE,
                created_at     INTEGER NOT NULL,
                name           TEXT NOT NULL,
                description    TEXT,
                metadata       TEXT NOT NULL,
                expires_after  TEXT,
                last_active_at INTEGER NOT NULL,
                embedder       TEXT
            )
            """,
            """
            CREATE TABLE vector_store_files (
                seq             INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a seq names one row for good
                vector_store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
                file_id         TEXT NOT NULL,
                created_at      INTEGER NOT NULL,
                status          TEXT NOT NULL
                                CHECK (status IN ('in_progress', 'completed', 'failed', 'cancelled')),
                last_error      TEXT,
                attributes      TEXT NOT NULL,
                chunking        TEXT NOT NULL,
                usage_bytes     INTEGER NOT NULL DEFAULT 0,
                UNIQUE (vector_store_id, file_id)
            )
            """,
            "CREATE INDEX vector_store_files_status ON vector_store_files(vector_store_id, status)",
            "CREATE INDEX vector_store_files_in_progress ON vector_store_files(seq) WHERE status = 'in_progress'",
            """
            CREATE TABLE vector_store_file_batches (
                seq             INTEGER PRIMARY KEY,
                id              TEXT NOT NULL UNIQUE,
                vector_store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
                created_at      INTEGER NOT NULL,
                cancelled       INTEGER NOT NULL DEFAULT 0
            )
            """,
            """
            CREATE TABLE vector_store_batch_files (
                batch_id TEXT NOT NULL REFERENCES vector_store_file_batches(id) ON DELETE CASCADE,
                file_id  TEXT NOT NULL,
                PRIMARY KEY (batch_id, file_id)
            ) WITHOUT ROWID
            """,
        ],
    ),
    (
        9,
        [
            # Listing (``GET /v1/responses``, ``GET /v1/conversations``): pages in (created_at, id) order, each
            # one index seek from its cursor. The model and status filters have their own index in list order, so
            # a filter that matches few rows does not walk the whole list to fill a page.
            "CREATE INDEX responses_listed ON responses(created_at, id)",
            "CREATE INDEX responses_model_listed ON responses(model, created_at, id)",
            "CREATE INDEX responses_status_listed ON responses(status, created_at, id)",
            "CREATE INDEX conversations_listed ON conversations(created_at, id)",
            # ``metadata[key]=value`` filters: one row per metadata pair of a stored response, in list order
            # under (key, value), so the filter is an index range too; never read from the response's JSON blob.
            # created_at is the response's, copied so the index alone orders the page.
            """
            CREATE TABLE response_metadata (
                response_id TEXT NOT NULL REFERENCES responses(id) ON DELETE CASCADE,
                key         TEXT NOT NULL,
                value       TEXT NOT NULL,
                created_at  INTEGER NOT NULL
            )
            """,
            "CREATE UNIQUE INDEX response_metadata_owner ON response_metadata(response_id, key)",
            "CREATE INDEX response_metadata_listed ON response_metadata(key, value, created_at, response_id)",
            # Responses stored before this version get their rows once, here.
            """
            INSERT INTO response_metadata (response_id, key, value, created_at)
            SELECT r.id, m.key, m.value, r.created_at
            FROM responses AS r, json_each(CAST(r.response AS TEXT), '$.metadata') AS m
            WHERE json_valid(CAST(r.response AS TEXT)) AND json_type(CAST(r.response AS TEXT), '$.metadata') = 'object'
              AND m.type = 'text'
            """,
        ],
    ),
    (
        10,
        [
            # Tenancy: every root object belongs to a tenant; rows stored before this version belong to the
            # default tenant ''. Children (items, metadata, events, versions) are owned through their parent.
            "ALTER TABLE responses ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE conversations ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE prompts ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
            # The metadata filter's index must lead with the tenant too, so its rows carry their response's tenant
            # (copied, like created_at; the queries still check the response row's own tenant).
            "ALTER TABLE response_metadata ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
            # A conversation's age for retention: its last activity (creation, appended items, metadata updates).
            "ALTER TABLE conversations ADD COLUMN last_active_at INTEGER NOT NULL DEFAULT 0",
            "UPDATE conversations SET last_active_at = created_at",
            # Listing indexes lead with the tenant: a page is one seek inside the caller's own rows.
            "DROP INDEX responses_listed",
            "DROP INDEX responses_model_listed",
            "DROP INDEX responses_status_listed",
            "DROP INDEX conversations_listed",
            "DROP INDEX response_metadata_listed",
            "CREATE INDEX responses_listed ON responses(tenant, created_at, id)",
            "CREATE INDEX responses_model_listed ON responses(tenant, model, created_at, id)",
            "CREATE INDEX responses_status_listed ON responses(tenant, status, created_at, id)",
            "CREATE INDEX conversations_listed ON conversations(tenant, created_at, id)",
            "CREATE INDEX conversations_active ON conversations(tenant, last_active_at)",
            "CREATE INDEX response_metadata_listed ON response_metadata(tenant, key, value, created_at, response_id)",
            # prompts are listed in rowid order; an index on tenant alone is (tenant, rowid)
            "CREATE INDEX prompts_listed ON prompts(tenant)",
            # The prompt write views gain the tenant: a new version is only added to the tenant's own prompt.
            "DROP VIEW prompt_writes",
            "DROP VIEW prompt_version_writes",
            "CREATE VIEW prompt_writes (id, created_at, body, tenant) AS SELECT NULL, NULL, NULL, NULL WHERE 0",
            """
            CREATE TRIGGER prompt_writes_insert INSTEAD OF INSERT ON prompt_writes
            BEGIN
                INSERT INTO prompts (id, created_at, latest_version, default_version, tenant)
                VALUES (NEW.id, NEW.created_at, 1, NULL, NEW.tenant);
                INSERT INTO prompt_versions (prompt_id, version, created_at, body)
                VALUES (NEW.id, 1, NEW.created_at, NEW.body);
            END
            """,
            """
            CREATE VIEW prompt_version_writes (prompt_id, expected_version, created_at, body, tenant)
            AS SELECT NULL, NULL, NULL, NULL, NULL WHERE 0
            """,
            """
            CREATE TRIGGER prompt_version_writes_insert INSTEAD OF INSERT ON prompt_version_writes
            BEGIN
                SELECT RAISE(ABORT, 'prompt_not_found')
                WHERE NOT EXISTS (SELECT 1 FROM prompts WHERE id = NEW.prompt_id AND tenant = NEW.tenant);
                SELECT RAISE(ABORT, 'prompt_version_conflict')
                WHERE NEW.expected_version IS NOT NULL
                  AND NEW.expected_version <> (SELECT latest_version FROM prompts WHERE id = NEW.prompt_id);
                UPDATE prompts SET latest_version = latest_version + 1 WHERE id = NEW.prompt_id;
                INSERT INTO prompt_versions (prompt_id, version, created_at, body)
                SELECT NEW.prompt_id, latest_version, NEW.created_at, NEW.body FROM prompts WHERE id = NEW.prompt_id;
            END
            """,
        ],
    ),
    (
        11,
        [
            # Tenancy of uploaded files and vector stores: each row belongs to a tenant, and rows stored before
            # tenancy belong to the default tenant (''). A vector store's files, batches and chunks are owned
            # through the store. Listing walks one tenant's rows in creation order: SQLite appends the rowid
            # (the order files and vector stores are listed in) to every index, so (tenant) is (tenant, rowid).
            "ALTER TABLE files ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE vector_stores ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
            "DROP INDEX files_purpose",
            "CREATE INDEX files_listed ON files(tenant)",
            "CREATE INDEX files_purpose_listed ON files(tenant, purpose)",
            "CREATE INDEX vector_stores_listed ON vector_stores(tenant)",
        ],
    ),
    (
        12,
        [
            # The bridge's own API keys (RESPONSES_BRIDGE_AUTH=keys; store/api_keys.py). A key is
            # ``rbk_<id>_<secret>``: the id is the primary key, so resolving a key is one indexed read; only a
            # salted hash of the secret is kept. Revoked and expired keys stay listed (who had access, until when).
            """
            CREATE TABLE api_keys (
                id          TEXT PRIMARY KEY,
                tenant      TEXT NOT NULL,
                salt        BLOB NOT NULL,
                secret_hash BLOB NOT NULL,
                created_at  INTEGER NOT NULL,
                expires_at  INTEGER,
                revoked_at  INTEGER
            ) WITHOUT ROWID
            """,
            "CREATE INDEX api_keys_listed ON api_keys(created_at, id)",
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
