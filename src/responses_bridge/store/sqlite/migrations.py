"""Versioned schema for the SQLite store.

The schema version lives in ``PRAGMA user_version`` (part of the database header, so it commits and rolls back
with the migration itself). Migrations are append-only: an existing entry is never edited once released, because
databases in the wild were built from it; a change is a new ``(version, statements)`` entry at the end.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Sequence

import aiosqlite

from ..timings import SQLITE_USAGE_BACKFILL
from .agents.agent_schema import (
    AGENT_TABLES,
    AUTOMATION_BOUND_TABLES,
    AUTOMATION_DUE_INDEX,
    AUTOMATION_TABLES,
    STORED_BYTES_COLUMNS,
)
from .batches.batch_schema import BATCH_TABLES
from .console.response_facts import SCHEMA as FACTS_SCHEMA
from .db_thread import on_db_thread
from .files.upload_schema import UPLOAD_CLAIM_COLUMNS, UPLOAD_TABLES
from .files.vector_store_schema import VECTOR_STORE_CHUNK_INDEX, VECTOR_STORE_TABLES
from .schema import FIRST_STEPS, Migration

MIGRATIONS: list[Migration] = [
    *FIRST_STEPS,
    (6, VECTOR_STORE_CHUNK_INDEX),  # the vector stores' chunk index: keyword and vector search
    (7, VECTOR_STORE_TABLES),  # the Vector Stores API: stores, their files, file batches
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
            # The bridge's own API keys (RESPONSES_BRIDGE_AUTH=keys; store/keys.py). A key is
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
    (
        13,
        [
            # Code interpreter containers (services/containers/containers.py) and their files' rows; the bytes are blobs
            # in the files' storage under ``blob_id``. A container expires ``expires_minutes`` after its last use.
            """
            CREATE TABLE containers (
                id              TEXT PRIMARY KEY,
                tenant          TEXT NOT NULL,
                name            TEXT NOT NULL,
                created_at      INTEGER NOT NULL,
                last_active_at  INTEGER NOT NULL,
                expires_minutes INTEGER NOT NULL,
                memory_limit    TEXT
            )
            """,
            "CREATE INDEX containers_listed ON containers(tenant, created_at)",
            "CREATE INDEX containers_expiry ON containers(last_active_at)",
            """
            CREATE TABLE container_files (
                id           TEXT PRIMARY KEY,
                container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
                path         TEXT NOT NULL,
                bytes        INTEGER NOT NULL,
                created_at   INTEGER NOT NULL,
                source       TEXT NOT NULL,
                blob_id      TEXT NOT NULL UNIQUE,
                UNIQUE (container_id, path)
            )
            """,
        ],
    ),
    (
        14,
        [
            # Several worker processes on one database file (serve --workers): who runs each background response
            # (background_runs.py: owner + lease, renewed by the owner's heartbeat; a cancel asked
            # of another worker), and which worker ingests each vector store file (a claim with a lease, as on
            # PostgreSQL). Times are Unix seconds: the workers share one machine's clock.
            """
            CREATE TABLE background_runs (
                response_id      TEXT PRIMARY KEY,
                owner            TEXT NOT NULL,
                lease_until      REAL NOT NULL,
                cancel_requested INTEGER NOT NULL DEFAULT 0
            ) WITHOUT ROWID
            """,
            "CREATE INDEX background_runs_owner ON background_runs(owner)",
            "ALTER TABLE vector_store_files ADD COLUMN claimed_by TEXT",
            "ALTER TABLE vector_store_files ADD COLUMN lease_until REAL",
        ],
    ),
    (
        15,
        [
            # Stored Chat Completions (chat_completions.py): the upstream's id is unique per tenant
            # (a reused id replaces the older answer); a rowid table, its keys in small indexes (see version 4).
            # ``created_at`` is when it was stored: the list order and the retention age.
            """
            CREATE TABLE chat_completions (
                tenant     TEXT NOT NULL,
                id         TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                model      TEXT NOT NULL,
                metadata   TEXT NOT NULL,
                completion BLOB NOT NULL,
                messages   BLOB NOT NULL
            )
            """,
            "CREATE UNIQUE INDEX chat_completions_id ON chat_completions(tenant, id)",
            "CREATE INDEX chat_completions_listed ON chat_completions(tenant, created_at, id)",
        ],
    ),
    (
        16,
        [
            # Skills (store/sqlite/containers/skills.py): a skill, its numbered versions (each a zip in the files' bytes
            # storage under ``blob_id``; ``version_counter``: the highest number ever given, so none is reused),
            # and the skills a container was made with (its own copies, deleted with it).
            """
            CREATE TABLE skills (
                id              TEXT PRIMARY KEY,
                tenant          TEXT NOT NULL,
                name            TEXT NOT NULL,
                description     TEXT NOT NULL,
                created_at      INTEGER NOT NULL,
                default_version INTEGER NOT NULL,
                version_counter INTEGER NOT NULL
            )
            """,
            "CREATE INDEX skills_listed ON skills(tenant, created_at)",
            """
            CREATE TABLE skill_versions (
                id          TEXT PRIMARY KEY,
                skill_id    TEXT NOT NULL REFERENCES skills(id) ON DELETE CASCADE,
                version     INTEGER NOT NULL,
                name        TEXT NOT NULL,
                description TEXT NOT NULL,
                created_at  INTEGER NOT NULL,
                bytes       INTEGER NOT NULL,
                blob_id     TEXT NOT NULL UNIQUE,
                UNIQUE (skill_id, version)
            )
            """,
            """
            CREATE TABLE container_skills (
                container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
                position     INTEGER NOT NULL,
                name         TEXT NOT NULL,
                description  TEXT NOT NULL,
                bytes        INTEGER NOT NULL,
                blob_id      TEXT NOT NULL UNIQUE,
                PRIMARY KEY (container_id, position)
            )
            """,
        ],
    ),
    (
        17,
        [
            # A container's network policy (sandbox/egress/policy.py): an ``allowlist`` as JSON, each domain
            # secret's value sealed with the deployment's key; NULL is ``disabled``.
            "ALTER TABLE containers ADD COLUMN network_policy TEXT",
        ],
    ),
    (18, UPLOAD_TABLES),
    (19, UPLOAD_CLAIM_COLUMNS),
    (20, AGENT_TABLES),  # the Agents API: agents, sessions, turns, items, session events
    (23, AUTOMATION_TABLES),  # the Agents API's automations: one claimed row per firing
    (
        24,
        [
            # The packages installed at an agent environment's start (services/agents/environments/packages.py): the
            # blob holding the zip of their tree (store/file_ids.py's BLOB_OWNERS); NULL: none.
            "ALTER TABLE containers ADD COLUMN packages_blob TEXT",
        ],
    ),
    (
        25,
        [
            # The bytes a session's artifact keeps, read by the files' sweep (store/file_ids.py's
            # SQLITE_RECORD_BLOBS, the same expression): without it, the sweep took an artifact's bytes for an orphan.
            "CREATE INDEX IF NOT EXISTS agent_records_blob ON agent_records (json_extract(body, '$._private.blob_id'))",
        ],
    ),
    (
        26,
        [
            # An ``item_reference`` to any item the tenant stored (stored_items.py): the items found by
            # id alone, without the response or conversation that holds them.
            "CREATE INDEX IF NOT EXISTS response_items_by_item ON response_items (item_id)",
            "CREATE INDEX IF NOT EXISTS conversation_items_by_item ON conversation_items (item_id)",
        ],
    ),
    (27, AUTOMATION_BOUND_TABLES),  # automations bounded: firings' tenant and rate, versions, invocations' age
    (28, STORED_BYTES_COLUMNS),  # the Agents API's records and installed packages count in max_stored_bytes
    (29, AUTOMATION_DUE_INDEX),  # the scheduler's due automations through an index, not every body a tick
    (
        30,
        [
            # Idempotency-Key of POST /v1/responses (idempotency.py): a tenant's key, the fingerprint of
            # the body it came with, the response it answered (NULL while the first request runs), until it expires.
            """
            CREATE TABLE idempotency_keys (
                tenant      TEXT NOT NULL,
                key         TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                response_id TEXT,
                expires_at  INTEGER NOT NULL,
                PRIMARY KEY (tenant, key)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at)",
        ],
    ),
    (
        31,
        [
            # An operator's key (`keys create --operator`, the console's Operations): it sees every tenant.
            "ALTER TABLE api_keys ADD COLUMN operator INTEGER NOT NULL DEFAULT 0",
        ],
    ),
    (
        32,
        [
            # A console sign-in its browser signed out of (api_keys.py's end_sign_in): refused from then on, until
            # the cookie would have expired anyway (when the row may go).
            """
            CREATE TABLE console_sign_outs (
                sign_in    TEXT PRIMARY KEY,
                expires_at INTEGER NOT NULL
            ) WITHOUT ROWID
            """,
            "CREATE INDEX console_sign_outs_expiry ON console_sign_outs (expires_at)",
        ],
    ),
    (
        33,
        [
            # Which replica of an upstream served each chain (idempotency.py): a chain's next turn in another
            # worker, or its background run resumed by another process, goes where its prefix is cached.
            """
            CREATE TABLE replica_chains (
                upstream TEXT NOT NULL,
                key      TEXT NOT NULL,
                replica  TEXT NOT NULL,
                at       INTEGER NOT NULL,
                PRIMARY KEY (upstream, key)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX replica_chains_at ON replica_chains (at)",
        ],
    ),
    (34, BATCH_TABLES),  # the Batch API: batches, their lines, the lease of the process running each
    (
        35,
        [
            # Every response's and stored chat completion's timing (observability/timing.py), kept with its row and
            # gone with it: time to first token and latency in columns (the console's Logs sorts and filters on
            # them), the whole document (the upstream's first byte, the pools waited for, the trace's spans) beside.
            "ALTER TABLE responses ADD COLUMN ttft_ms REAL",
            "ALTER TABLE responses ADD COLUMN latency_ms REAL",
            "ALTER TABLE responses ADD COLUMN timing BLOB",
            "ALTER TABLE chat_completions ADD COLUMN ttft_ms REAL",
            "ALTER TABLE chat_completions ADD COLUMN latency_ms REAL",
            "ALTER TABLE chat_completions ADD COLUMN timing BLOB",
        ],
    ),
    (
        36,
        [
            # The console's Logs sorted by latency or time to first token, slowest first (console/browse.py):
            # a seek in the tenant's entries in that order, the values in the index (a row's columns past its JSON
            # would be read through the JSON's overflow pages).
            "CREATE INDEX responses_by_latency ON responses(tenant, latency_ms, id)",
            "CREATE INDEX responses_by_ttft ON responses(tenant, ttft_ms, id)",
        ],
    ),
    (
        37,
        [
            # What the console's Usage sums, in columns written at save time (store/timings.py): its totals
            # by model, tenant and API key become GROUP BY statements over the window instead of parsing every
            # stored response of it; and the id of the API key that made each response (never the key), which the
            # Logs filter on. The index covers them all, led by the tenant and the hour (Usage groups by hour, model and
            # key in the index's order, no sort), so the sums read index entries only (a row's columns
            # past its JSON would be read through the JSON's overflow pages).
            "ALTER TABLE responses ADD COLUMN input_tokens INTEGER",
            "ALTER TABLE responses ADD COLUMN cached_tokens INTEGER",
            "ALTER TABLE responses ADD COLUMN output_tokens INTEGER",
            "ALTER TABLE responses ADD COLUMN total_tokens INTEGER",
            "ALTER TABLE responses ADD COLUMN api_key_id TEXT",
            "ALTER TABLE responses ADD COLUMN usage_hour INTEGER",  # created_at // 3600: Usage groups in its order
            "UPDATE responses SET usage_hour = created_at / 3600",
            SQLITE_USAGE_BACKFILL,
            "CREATE INDEX responses_usage ON responses(tenant, usage_hour, model, api_key_id, input_tokens, "
            "cached_tokens, output_tokens, total_tokens)",
        ],
    ),
    (
        38,
        [
            # No statement reads responses by their previous_response_id (a chain is walked back through the ids,
            # the primary key), yet every save wrote this index: one more B-tree insert and WAL frame a response,
            # about 0.7 % of a plain request's instructions. PostgreSQL never had it.
            "DROP INDEX responses_previous_response_id",
        ],
    ),
    # the console's latency, time-to-first-token and Usage indexes moved off ``responses`` to a table written behind
    # the saves (console/response_facts.py): three WAL frames a save fewer
    (39, FACTS_SCHEMA),
]

LATEST_VERSION: int = MIGRATIONS[-1][0]


class NewerSchema(RuntimeError):
    """The database was written by a newer bridge than this one."""


def _check_known(found: int, latest: int) -> None:
    """Refuse databases written by a newer bridge: silently using them could corrupt data we don't understand."""
    if found > latest:
        raise NewerSchema(
            f"response store schema version {found} is newer than the newest version this bridge knows ({latest}); "
            "upgrade responses-bridge or point it at another database"
        )


async def migrate(conn: aiosqlite.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database up to the newest version and return that version.

    ``conn`` must be in autocommit mode (``isolation_level=None``) because the transaction is managed here.
    All pending migrations run in one ``BEGIN IMMEDIATE`` transaction, so a crash leaves the old version intact,
    and the version is re-read after taking the write lock so two processes opening the same fresh file at once
    don't both try to create the tables. The transaction runs on the connection's own thread in one hop
    (db_thread.py), not a hop a statement: a new database's ~150 statements took 43 ms of CPU that way, most of it
    the hops, paid by every fresh start and every store a test opens.
    """
    latest = migrations[-1][0] if migrations else 0
    return await on_db_thread(conn, functools.partial(_migrate, migrations=migrations, latest=latest))


def _version(raw: sqlite3.Connection) -> int:
    return int(raw.execute("PRAGMA user_version").fetchone()[0])


def _migrate(raw: sqlite3.Connection, migrations: Sequence[Migration], latest: int) -> int:
    _check_known(_version(raw), latest)  # a newer database refused before the write lock is taken
    raw.execute("BEGIN IMMEDIATE")
    try:
        current = _version(raw)
        _check_known(current, latest)
        for version, statements in migrations:
            if version <= current:
                continue
            for statement in statements:
                raw.execute(statement)
            # PRAGMA takes no bound parameters; version is an int from our own table, never user input.
            raw.execute(f"PRAGMA user_version = {int(version)}")
            current = version
        raw.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            raw.execute("ROLLBACK")
        raise
    return current
