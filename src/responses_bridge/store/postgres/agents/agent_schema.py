"""The Agents API's tables on PostgreSQL (agents.py), as on SQLite
(store/sqlite/agents/agent_schema.py)."""

from __future__ import annotations

from collections.abc import Sequence

AGENT_TABLES: Sequence[str] = [
    """
    CREATE TABLE agent_records (
        seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind     text NOT NULL,
        id       text NOT NULL,
        tenant   text NOT NULL,
        parent   text,
        scope    text,
        body     jsonb NOT NULL,
        UNIQUE (kind, id)
    )
    """,
    "CREATE INDEX agent_records_listed ON agent_records (tenant, kind, parent, seq)",
    "CREATE INDEX agent_records_children ON agent_records (parent)",
    """
    CREATE TABLE agent_session_events (
        session_id text NOT NULL,
        sequence   bigint NOT NULL,
        event_id   text NOT NULL,
        tenant     text NOT NULL,
        frame      bytea NOT NULL,
        PRIMARY KEY (session_id, sequence)
    )
    """,
    "CREATE INDEX agent_session_events_ids ON agent_session_events (session_id, event_id)",
    # which process runs a session's turns (several workers or replicas on one database): a lease it renews
    """
    CREATE TABLE agent_session_owners (
        session_id text PRIMARY KEY,
        owner      text NOT NULL,
        expires_at double precision NOT NULL
    )
    """,
]

# Automations (services/agents/automations/automations.py): one row per firing claimed, its key the automation and the
# occurrence, so of every worker and replica that sees an occurrence due exactly one inserts it and makes its
# invocation.
AUTOMATION_TABLES: Sequence[str] = [
    """
    CREATE TABLE agent_automation_firings (
        automation_id text NOT NULL,
        scheduled_at  bigint NOT NULL,
        invocation_id text NOT NULL,
        PRIMARY KEY (automation_id, scheduled_at)
    )
    """,
]

# Automations bounded, as on SQLite (store/sqlite/agents/agent_schema.py's AUTOMATION_BOUND_TABLES).
AUTOMATION_BOUND_TABLES: Sequence[str] = [
    "ALTER TABLE agent_automation_firings ADD COLUMN tenant text",
    "ALTER TABLE agent_automation_firings ADD COLUMN fired_at double precision",
    "ALTER TABLE agent_automation_firings ADD COLUMN accepted boolean",
    "CREATE INDEX agent_automation_firings_rate ON agent_automation_firings (tenant, fired_at)",
    """
    CREATE TABLE agent_automation_versions (
        automation_id text NOT NULL,
        digest        text NOT NULL,
        tenant        text NOT NULL,
        created_at    double precision NOT NULL,
        body          jsonb NOT NULL,
        bytes         bigint NOT NULL,
        PRIMARY KEY (automation_id, digest)
    )
    """,
    "CREATE INDEX agent_automation_versions_bytes ON agent_automation_versions (tenant, bytes)",
    "CREATE INDEX agent_records_invocation_age ON agent_records (((body->>'created_at')::bigint)) "
    "WHERE kind = 'invocation'",
]

# Everything a tenant stores counts in its ``max_stored_bytes``, as on SQLite (store/sqlite/agents/agent_schema.py's
# STORED_BYTES_COLUMNS).
STORED_BYTES_COLUMNS: Sequence[str] = [
    "ALTER TABLE agent_records ADD COLUMN bytes bigint NOT NULL DEFAULT 0",
    "UPDATE agent_records SET bytes = octet_length(body::text) + CASE WHEN kind = 'artifact' "
    "THEN coalesce((body->>'size_bytes')::bigint, 0) ELSE 0 END",
    "CREATE INDEX agent_records_bytes ON agent_records (tenant, bytes)",
    "ALTER TABLE containers ADD COLUMN packages_bytes bigint NOT NULL DEFAULT 0",
]

# The scheduler's due automations through an index, as on SQLite (store/sqlite/agents/agent_schema.py's
# AUTOMATION_DUE_INDEX): a stored generated column, so the due query never reads (nor de-TOASTs) a body it does not
# fire.
AUTOMATION_DUE_INDEX: Sequence[str] = [
    "ALTER TABLE agent_records ADD COLUMN due_at double precision GENERATED ALWAYS AS (CASE WHEN kind = 'automation' "
    "AND body->>'status' = 'active' THEN (body->>'_next_at')::double precision END) STORED",
    "CREATE INDEX agent_records_due ON agent_records (due_at, tenant) WHERE due_at IS NOT NULL",
]

# a record written, new or replaced (the records' put and commit, and the scheduler's claim of a firing); ``bytes``:
# what the record counts in its tenant's max_stored_bytes (store/postgres/quota.py), its JSON and an artifact's kept
# bytes (base_agents.charged_bytes: counted by the caller, not by the server re-reading the jsonb as text)
PUT_RECORD = ("INSERT INTO agent_records (kind, id, tenant, parent, scope, body, bytes) VALUES ($1, $2, $3, $4, $5, "
              "$6::jsonb, $7) ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, bytes = excluded.bytes "
              "WHERE agent_records.tenant = excluded.tenant")
