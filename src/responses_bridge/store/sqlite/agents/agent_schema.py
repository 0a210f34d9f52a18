"""The Agents API's tables on SQLite (agents.py), as on PostgreSQL
(store/postgres/agents/agent_schema.py)."""

from __future__ import annotations

from collections.abc import Sequence

AGENT_TABLES: Sequence[str] = [
    # One row per record; ``seq`` (the rowid) is the order records are listed in, kept when a record is replaced.
    """
    CREATE TABLE agent_records (
        seq      INTEGER PRIMARY KEY,
        kind     TEXT NOT NULL,
        id       TEXT NOT NULL,
        tenant   TEXT NOT NULL,
        parent   TEXT,
        scope    TEXT,
        body     TEXT NOT NULL,
        UNIQUE (kind, id)
    )
    """,
    "CREATE INDEX agent_records_listed ON agent_records (tenant, kind, parent, seq)",
    "CREATE INDEX agent_records_children ON agent_records (parent)",
    """
    CREATE TABLE agent_session_events (
        session_id TEXT NOT NULL,
        sequence   INTEGER NOT NULL,
        event_id   TEXT NOT NULL,
        tenant     TEXT NOT NULL,
        frame      BLOB NOT NULL,
        PRIMARY KEY (session_id, sequence)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX agent_session_events_ids ON agent_session_events (session_id, event_id)",
    # which process runs a session's turns (several workers or replicas on one database): a lease it renews
    """
    CREATE TABLE agent_session_owners (
        session_id TEXT PRIMARY KEY,
        owner      TEXT NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID
    """,
]

# Automations (services/agents/automations/automations.py): one row per firing claimed, its key the automation and the
# occurrence, so of every worker and replica that sees an occurrence due exactly one inserts it and makes its
# invocation.
AUTOMATION_TABLES: Sequence[str] = [
    """
    CREATE TABLE agent_automation_firings (
        automation_id TEXT NOT NULL,
        scheduled_at  INTEGER NOT NULL,
        invocation_id TEXT NOT NULL,
        PRIMARY KEY (automation_id, scheduled_at)
    ) WITHOUT ROWID
    """,
]

# Automations bounded (services/agents/automations/bounds.py): each firing says whose it was, when it was fired and
# whether the tenant's rate let it through (the rate counts those of the last minute); an invocation refers to the
# version of its automation it fired (one row per distinct snapshot, not a copy per invocation); invocations are
# forgotten by age through their own index.
AUTOMATION_BOUND_TABLES: Sequence[str] = [
    "ALTER TABLE agent_automation_firings ADD COLUMN tenant TEXT",
    "ALTER TABLE agent_automation_firings ADD COLUMN fired_at REAL",
    "ALTER TABLE agent_automation_firings ADD COLUMN accepted INTEGER",
    "CREATE INDEX agent_automation_firings_rate ON agent_automation_firings (tenant, fired_at)",
    """
    CREATE TABLE agent_automation_versions (
        automation_id TEXT NOT NULL,
        digest        TEXT NOT NULL,
        tenant        TEXT NOT NULL,
        created_at    REAL NOT NULL,
        body          TEXT NOT NULL,
        bytes         INTEGER NOT NULL,
        PRIMARY KEY (automation_id, digest)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX agent_automation_versions_bytes ON agent_automation_versions (tenant, bytes)",
    "CREATE INDEX agent_records_invocation_age ON agent_records (json_extract(body, '$.created_at')) "
    "WHERE kind = 'invocation'",
]

# Everything a tenant stores counts in its ``max_stored_bytes`` (store/sqlite/files/quota.py): each record's bytes (its
# JSON, and an artifact's kept bytes too: store/base_agents.py's charged_bytes) in a column of its own, summed
# through an index that holds it, so the sum never reads a record's body; a container's installed packages' bytes.
STORED_BYTES_COLUMNS: Sequence[str] = [
    "ALTER TABLE agent_records ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0",
    "UPDATE agent_records SET bytes = length(CAST(body AS BLOB)) + CASE WHEN kind = 'artifact' "
    "THEN coalesce(json_extract(body, '$.size_bytes'), 0) ELSE 0 END",
    "CREATE INDEX agent_records_bytes ON agent_records (tenant, bytes)",
    "ALTER TABLE containers ADD COLUMN packages_bytes INTEGER NOT NULL DEFAULT 0",
]

# The scheduler's due automations found through an index (automations.py's due query): an active
# automation's next occurrence in a column of its own, computed from its body (virtual: nothing written twice), in
# an index holding the tenant too. Without it each tick (every second) read and parsed every automation's body —
# 10,000 automations of 200 KiB instructions are 2 GB a tick — and a tick that outran its second delayed every
# tenant's occurrences; the index reads only the due rows' keys, the bodies of those fired.
AUTOMATION_DUE_INDEX: Sequence[str] = [
    "ALTER TABLE agent_records ADD COLUMN due_at REAL GENERATED ALWAYS AS (CASE WHEN kind = 'automation' "
    "AND json_extract(body, '$.status') = 'active' THEN json_extract(body, '$._next_at') END) VIRTUAL",
    "CREATE INDEX agent_records_due ON agent_records (due_at, tenant) WHERE due_at IS NOT NULL",
]

# a record written, new or replaced (the records' put and commit, and the scheduler's claim of a firing); ``bytes``:
# what the record counts in its tenant's max_stored_bytes (store/sqlite/files/quota.py), its JSON and an artifact's
# kept bytes
PUT_RECORD = ("INSERT INTO agent_records (kind, id, tenant, parent, scope, body, bytes) "
              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, length(CAST(?6 AS BLOB)) + CASE WHEN ?1 = 'artifact' "
              "THEN coalesce(json_extract(?6, '$.size_bytes'), 0) ELSE 0 END) ON CONFLICT (kind, id) DO UPDATE "
              "SET body = excluded.body, bytes = excluded.bytes WHERE agent_records.tenant = excluded.tenant")
