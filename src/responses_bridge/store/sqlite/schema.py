"""The first SQLite schema steps (versions 1-5): responses with their items, conversations, background runs'
event logs, rowid tables for JSON blobs, uploaded files. Append-only, as every migration (see migrations.py).
"""

from __future__ import annotations

from collections.abc import Sequence

Migration = tuple[int, Sequence[str]]

# The prompt write views (version 2; made again by version 4 after it rebuilt prompt_versions): creating a prompt
# (row + version 1) in one statement, and a new version in one statement whose expected_version (NULL = don't
# care) must still be the latest.
PROMPT_WRITE_VIEWS: list[str] = [
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
]

FIRST_STEPS: list[Migration] = [
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
            *PROMPT_WRITE_VIEWS,
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
        # only short keys. Writes now go row by row from Python (responses.py), so the JSON-array views are
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
            *PROMPT_WRITE_VIEWS,
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
            # ``files/<id>`` (store/sqlite/files/files.py). A rowid table: rowid is the creation order pages are listed
            # in. expires_at NULL: kept until deleted.
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
]
