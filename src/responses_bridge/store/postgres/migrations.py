"""Versioned schema of the PostgreSQL store, applied at start by one replica at a time.

Replicas of one deployment start together and all open the same database. Each takes a session-level
``pg_advisory_lock`` before looking at the schema, so exactly one of them applies what is missing while the
others wait, then find the schema up to date and apply nothing. Each migration runs in its own transaction with
the bump of ``schema_version`` (PostgreSQL has transactional DDL), so a crash leaves the last complete version.

The list is append-only, like the SQLite one: a released entry is never edited, a change is a new entry at the
end. Numbering: versions 1-9 hold the core tables (responses and their items, metadata and events, conversations,
prompts, API keys); the retrieval tables (files, vector stores, chunks) start at 10.

Tenancy: every root table has ``tenant text NOT NULL DEFAULT ''`` and its listing index leads with it; child rows
are owned through their parent (every statement that reaches them by parent id checks the parent's tenant).
JSON documents are stored as ``bytea`` exactly as serialised: a response is answered byte for byte as stored,
without a parse and re-serialisation in the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
    """A connection of the pool, as every store receives it."""

Migration = tuple[int, Sequence[str]]

from ..timings import POSTGRES_USAGE_BACKFILL  # noqa: E402
from .agents.agent_schema import (  # noqa: E402
    AGENT_TABLES,
    AUTOMATION_BOUND_TABLES,
    AUTOMATION_DUE_INDEX,
    AUTOMATION_TABLES,
    STORED_BYTES_COLUMNS,
)
from .batches.batch_schema import BATCH_TABLES  # noqa: E402
from .containers.container_schema import CONTAINER_MIGRATIONS  # noqa: E402  (after Migration, which it follows)
from .containers.skill_schema import SKILL_MIGRATIONS  # noqa: E402
from .files.retrieval_schema import RETRIEVAL_MIGRATIONS  # noqa: E402  (after Migration, which it follows)
from .files.upload_schema import UPLOAD_MIGRATIONS  # noqa: E402

ADVISORY_LOCK_KEY = 0x7265_7370_6272_6467 & 0x7FFF_FFFF_FFFF_FFFF
"""The ``pg_advisory_lock`` key the migrating replica holds ("respbrdg"): any other holder of it is a replica
of this bridge migrating the same database."""

MIGRATIONS: list[Migration] = [
    (
        1,
        [
            # previous_response_id is not a foreign key: a chain may point at a deleted (or never stored)
            # response, and history then simply starts after that missing link.
            """
            CREATE TABLE responses (
                id                   text PRIMARY KEY,
                tenant               text NOT NULL DEFAULT '',
                created_at           bigint NOT NULL,
                status               text,
                model                text,
                previous_response_id text,
                response             bytea NOT NULL
            )
            """,
            "CREATE INDEX responses_listed ON responses (tenant, created_at, id)",
            "CREATE INDEX responses_model_listed ON responses (tenant, model, created_at, id)",
            "CREATE INDEX responses_status_listed ON responses (tenant, status, created_at, id)",
            # background runs left queued/in progress: a small partial index, read at every start
            "CREATE INDEX responses_unfinished ON responses (id) WHERE status IN ('queued', 'in_progress')",
            """
            CREATE TABLE response_items (
                response_id text NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
                kind        text NOT NULL CHECK (kind IN ('input', 'output')),
                position    integer NOT NULL,
                item_id     text,
                item        bytea NOT NULL,
                PRIMARY KEY (response_id, kind, position)
            )
            """,
            # ``metadata[key]=value`` filters of GET /v1/responses: one row per string pair, the response's tenant
            # and created_at copied so one index range orders a tenant's page.
            """
            CREATE TABLE response_metadata (
                response_id text NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
                tenant      text NOT NULL DEFAULT '',
                key         text NOT NULL,
                value       text NOT NULL,
                created_at  bigint NOT NULL,
                PRIMARY KEY (response_id, key)
            )
            """,
            "CREATE INDEX response_metadata_listed ON response_metadata (tenant, key, value, created_at, response_id)",
            # The event log of background responses: frames exactly as sent (SSE), so a replay, on any replica,
            # is byte for byte what a live client got. Deleted with their response (by the store's statement:
            # events may be appended before the response row is written).
            """
            CREATE TABLE response_events (
                response_id     text NOT NULL,
                sequence_number integer NOT NULL,
                event           bytea NOT NULL,
                PRIMARY KEY (response_id, sequence_number)
            )
            """,
            # Conversations: items numbered from the conversation's own counter (next_seq), so an append never
            # reads the items table; the counter's row lock orders concurrent appends from several replicas.
            """
            CREATE TABLE conversations (
                id         text PRIMARY KEY,
                tenant     text NOT NULL DEFAULT '',
                created_at bigint NOT NULL,
                metadata   text NOT NULL,
                next_seq   bigint NOT NULL DEFAULT 0,
                last_active_at bigint NOT NULL
            )
            """,
            "CREATE INDEX conversations_listed ON conversations (tenant, created_at, id)",
            # retention: a conversation's age is its last activity (creation, appended items, metadata updates)
            "CREATE INDEX conversations_active ON conversations (tenant, last_active_at)",
            """
            CREATE TABLE conversation_items (
                conversation_id text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                seq             bigint NOT NULL,
                item_id         text,
                item            bytea NOT NULL,
                PRIMARY KEY (conversation_id, seq)
            )
            """,
            "CREATE INDEX conversation_items_item_id ON conversation_items (conversation_id, item_id)",
            # Prompts and their immutable versions; default_version NULL means "the latest". ``created_seq``
            # orders the list in creation order, also within one second (SQLite uses its rowid for this).
            """
            CREATE TABLE prompts (
                id              text PRIMARY KEY,
                tenant          text NOT NULL DEFAULT '',
                created_at      bigint NOT NULL,
                created_seq     bigint GENERATED ALWAYS AS IDENTITY,
                latest_version  integer NOT NULL,
                default_version integer
            )
            """,
            "CREATE INDEX prompts_listed ON prompts (tenant, created_seq)",
            """
            CREATE TABLE prompt_versions (
                prompt_id  text NOT NULL REFERENCES prompts (id) ON DELETE CASCADE,
                version    integer NOT NULL,
                created_at bigint NOT NULL,
                body       text NOT NULL,
                PRIMARY KEY (prompt_id, version)
            )
            """,
            # Values every replica must agree on, written once by the first replica that needs them (the sealing
            # key of encrypted reasoning items when none is configured: a chain moves between replicas).
            """
            CREATE TABLE shared_values (
                name  text PRIMARY KEY,
                value text NOT NULL
            )
            """,
        ],
    ),
    (
        2,
        [
            # The bridge's own API keys (RESPONSES_BRIDGE_AUTH=keys), as SQLite's migration 12: only a salted
            # hash of each key's secret; revoked and expired keys stay listed.
            """
            CREATE TABLE api_keys (
                id          text PRIMARY KEY,
                tenant      text NOT NULL,
                salt        bytea NOT NULL,
                secret_hash bytea NOT NULL,
                created_at  bigint NOT NULL,
                expires_at  bigint,
                revoked_at  bigint
            )
            """,
            "CREATE INDEX api_keys_listed ON api_keys (created_at, id)",
        ],
    ),
    # Background responses across replicas (background_runs.py): each running one's owner and lease, and cancel
    # requests; a trigger notifies followers on other replicas when events are appended.
    (
        9,
        [
            """
            CREATE TABLE background_runs (
                response_id      text PRIMARY KEY,
                owner            text NOT NULL,
                lease_until      timestamptz NOT NULL,
                cancel_requested boolean NOT NULL DEFAULT false
            )
            """,
            """
            CREATE FUNCTION responses_bridge_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('responses_bridge_events', NEW.response_id);
                RETURN NULL;
            END
            $$
            """,
            """
            CREATE TRIGGER response_events_notify AFTER INSERT ON response_events
            FOR EACH ROW EXECUTE FUNCTION responses_bridge_events_notify()
            """,
        ],
    ),
]
MIGRATIONS.extend(RETRIEVAL_MIGRATIONS)  # 10 onwards: files, file bytes, vector stores, the chunk index
MIGRATIONS.extend(CONTAINER_MIGRATIONS)  # 13: code interpreter containers and their files
MIGRATIONS.append((
    14,
    [
        # Stored Chat Completions (chat_completions.py): the upstream's id is unique per tenant (a
        # reused id replaces the older answer); ``created_at`` is when it was stored (list order, retention age).
        """
        CREATE TABLE chat_completions (
            tenant     text NOT NULL,
            id         text NOT NULL,
            created_at bigint NOT NULL,
            model      text NOT NULL,
            metadata   text NOT NULL,
            completion bytea NOT NULL,
            messages   bytea NOT NULL,
            PRIMARY KEY (tenant, id)
        )
        """,
        "CREATE INDEX chat_completions_listed ON chat_completions (tenant, created_at, id)",
    ],
))
MIGRATIONS.extend(SKILL_MIGRATIONS)  # 15: skills, their versions, containers' skills
MIGRATIONS.append((
    16,
    [
        # A container's network policy (sandbox/egress/policy.py), as SQLite's migration 17: an ``allowlist`` as
        # JSON, each domain secret's value sealed with the deployment's key; NULL is ``disabled``.
        "ALTER TABLE containers ADD COLUMN network_policy text",
    ],
))
MIGRATIONS.extend(UPLOAD_MIGRATIONS)  # 17: the Uploads API's uploads and parts; 18: their completion claims
MIGRATIONS.append((19, AGENT_TABLES))  # the Agents API: agents, sessions, turns, items, session events
MIGRATIONS.append((22, AUTOMATION_TABLES))  # the Agents API's automations: one claimed row per firing
MIGRATIONS.append((
    23,
    [
        # The packages installed at an agent environment's start, as SQLite's migration 24: the blob holding
        # the zip of their tree (store/file_ids.py's BLOB_OWNERS); NULL: none.
        "ALTER TABLE containers ADD COLUMN packages_blob text",
    ],
))
MIGRATIONS.append((
    24,
    [
        # As SQLite's migration 25: the bytes a session's artifact keeps, read by the files' sweep (store/file_ids.py's
        # POSTGRES_RECORD_BLOBS, the same expression).
        "CREATE INDEX IF NOT EXISTS agent_records_blob ON agent_records ((body #>> '{_private,blob_id}'))",
    ],
))
MIGRATIONS.append((
    25,
    [
        # As SQLite's migration 26: an ``item_reference`` to any item the tenant stored
        # (stored_items.py), the items found by id alone.
        "CREATE INDEX IF NOT EXISTS response_items_by_item ON response_items (item_id)",
        "CREATE INDEX IF NOT EXISTS conversation_items_by_item ON conversation_items (item_id)",
    ],
))
MIGRATIONS.append((26, AUTOMATION_BOUND_TABLES))  # as SQLite's 27: automations bounded
MIGRATIONS.append((27, STORED_BYTES_COLUMNS))  # as SQLite's 28: the Agents API's records count in max_stored_bytes
MIGRATIONS.append((28, AUTOMATION_DUE_INDEX))  # as SQLite's 29: the due automations through an index
MIGRATIONS.append((29, [  # as SQLite's 30: Idempotency-Key of POST /v1/responses (idempotency.py)
    """
    CREATE TABLE idempotency_keys (
        tenant      TEXT NOT NULL,
        key         TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        response_id TEXT,
        expires_at  BIGINT NOT NULL,
        PRIMARY KEY (tenant, key)
    )
    """,
    "CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at)",
]))
MIGRATIONS.append((30, [  # as SQLite's 31: an operator's key (`keys create --operator`) sees every tenant
    "ALTER TABLE api_keys ADD COLUMN operator boolean NOT NULL DEFAULT false",
]))
MIGRATIONS.append((31, [  # as SQLite's 32: a console sign-in signed out of, refused until it would have expired
    """
    CREATE TABLE console_sign_outs (
        sign_in    TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
    )
    """,
    "CREATE INDEX console_sign_outs_expiry ON console_sign_outs (expires_at)",
]))
MIGRATIONS.append((32, [  # as SQLite's 33: which replica of an upstream served each chain (idempotency.py)
    """
    CREATE TABLE replica_chains (
        upstream TEXT NOT NULL,
        key      TEXT NOT NULL,
        replica  TEXT NOT NULL,
        at       BIGINT NOT NULL,
        PRIMARY KEY (upstream, key)
    )
    """,
    "CREATE INDEX replica_chains_at ON replica_chains (at)",
]))
MIGRATIONS.append((33, BATCH_TABLES))  # as SQLite's 34: the Batch API's batches, their lines, their leases

MIGRATIONS.append((34, [  # as SQLite's 35: every response's and stored chat completion's timing, in its row
    "ALTER TABLE responses ADD COLUMN ttft_ms double precision, ADD COLUMN latency_ms double precision, "
    "ADD COLUMN timing bytea",
    "ALTER TABLE chat_completions ADD COLUMN ttft_ms double precision, ADD COLUMN latency_ms double precision, "
    "ADD COLUMN timing bytea",
]))

MIGRATIONS.append((35, [  # as SQLite's 36: the console's Logs sorted by latency or time to first token, slowest first
    "CREATE INDEX responses_by_latency ON responses (tenant, latency_ms, id)",
    "CREATE INDEX responses_by_ttft ON responses (tenant, ttft_ms, id)",
]))

MIGRATIONS.append((36, [  # as SQLite's 37: Usage's columns (store/timings.py) and the API key's id, filled in
    "ALTER TABLE responses ADD COLUMN input_tokens bigint, ADD COLUMN cached_tokens bigint, "
    "ADD COLUMN output_tokens bigint, ADD COLUMN total_tokens bigint, ADD COLUMN api_key_id text, "
    "ADD COLUMN usage_hour bigint",
    "UPDATE responses SET usage_hour = created_at / 3600",
    POSTGRES_USAGE_BACKFILL,
    "CREATE INDEX responses_usage ON responses (tenant, usage_hour, model, api_key_id) INCLUDE (input_tokens, "
    "cached_tokens, output_tokens, total_tokens)",
]))

def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    return max((version for version, _ in migrations), default=0)


_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version  integer NOT NULL
)
"""


async def schema_version(conn: Connection) -> int:
    """The version the database is at; 0 for an empty database."""
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    found = await conn.fetchval("SELECT version FROM schema_version")
    return int(found) if found is not None else 0


def _check_known(found: int, latest: int) -> None:
    """Refuse a database a newer bridge migrated: using it could corrupt data this code does not understand."""
    if found > latest:
        raise RuntimeError(
            f"PostgreSQL store schema version {found} is newer than the newest version this bridge knows ({latest}); "
            "upgrade responses-bridge or point it at another database"
        )


async def migrate(conn: Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database up to the newest version and return that version.

    The advisory lock is held for the whole check-and-apply, so replicas starting together migrate one after
    the other; the version is read after taking it."""
    latest = latest_version(migrations)
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_CREATE_VERSION_TABLE)
        current = await schema_version(conn)
        _check_known(current, latest)
        for version, statements in sorted(migrations, key=lambda migration: migration[0]):
            if version <= current:
                continue
            async with conn.transaction():
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1) "
                                   "ON CONFLICT (only_row) DO UPDATE SET version = excluded.version", version)
            current = version
        return current
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


__all__ = ["ADVISORY_LOCK_KEY", "MIGRATIONS", "Migration", "latest_version", "migrate", "schema_version"]
