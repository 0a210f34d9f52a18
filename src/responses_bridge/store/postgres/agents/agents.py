"""The Agents API's records and session events on PostgreSQL (store/base_agents.py), shared by every replica. Every
statement names the tenant; another tenant's record is no record."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ...base_agents import OWNED_KINDS, Record, RecordPage, charged_bytes
from ...records import InvalidCursor, LeaseLost, check_page_args
from ..database import PostgresDatabase
from ..sql import pg_json
from .agent_schema import PUT_RECORD
from .automations import PostgresAutomationRecords

if TYPE_CHECKING:
    from ..migrations import Connection

CHILD_KINDS = ["turn", "item", "key", "artifact", "subagent", "trace"]
# what goes with its session (an agent's sessions outlive it), and with each of its subagents its turns and items:
_DELETE_SUBAGENTS_RECORDS = (
    "DELETE FROM agent_records WHERE tenant = $1 AND kind IN ('subagent_turn', 'subagent_item') AND parent IN "
    "(SELECT id FROM agent_records WHERE kind = 'subagent' AND parent = $2 AND tenant = $1)")

_GET = "SELECT body::text FROM agent_records WHERE kind = $1 AND id = $2 AND tenant = $3"
_SEQ = "SELECT seq FROM agent_records WHERE kind = $1 AND id = $2 AND tenant = $3"
_DELETE = "DELETE FROM agent_records WHERE kind = $1 AND id = $2 AND tenant = $3"
_DELETE_CHILDREN = "DELETE FROM agent_records WHERE parent = $1 AND tenant = $2 AND kind = ANY($3::text[])"
_DELETE_EVENTS = "DELETE FROM agent_session_events WHERE session_id = $1 AND tenant = $2"
_DELETE_CHILDREN_OF_KIND = "DELETE FROM agent_records WHERE parent = $1 AND tenant = $2 AND kind = $3"
_COUNT = "SELECT count(*) FROM agent_records WHERE kind = $1 AND tenant = $2"
_IN_USE = "SELECT EXISTS (SELECT 1 FROM agent_records)"
_UNFINISHED = ("SELECT tenant, body::text FROM agent_records WHERE kind = 'session' "
               "AND body->>'status' IN ('in_progress', 'requires_action') LIMIT $1")
# ``expires_at`` is unix seconds by the database's clock, the only clock a lease is judged by (never a replica's)
_DB_NOW = "extract(epoch from now())::double precision"
_CLAIM = ("INSERT INTO agent_session_owners (session_id, owner, expires_at) "
          f"VALUES ($1, $2, {_DB_NOW} + $3) "
          "ON CONFLICT (session_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
          f"WHERE agent_session_owners.owner = excluded.owner OR agent_session_owners.expires_at < {_DB_NOW} "
          "RETURNING session_id")
_RELEASE = "DELETE FROM agent_session_owners WHERE session_id = $1 AND owner = $2"
_RENEW = (f"UPDATE agent_session_owners SET expires_at = {_DB_NOW} + $3 WHERE session_id = ANY($1::text[]) "
          f"AND owner = $2 AND expires_at > {_DB_NOW} RETURNING session_id")
# the fence of a running turn's writes: locked for share, so a claim taking the lease waits for the write to commit
_HELD = (f"SELECT 1 FROM agent_session_owners WHERE session_id = $1 AND owner = $2 AND expires_at > {_DB_NOW} "
         "FOR SHARE")
_APPEND = ("INSERT INTO agent_session_events (session_id, sequence, event_id, tenant, frame) "
           "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
_AFTER = ("SELECT sequence, event_id, frame FROM agent_session_events WHERE session_id = $1 AND tenant = $2 "
          "AND sequence > $3 ORDER BY sequence LIMIT $4")
_EVENT_SEQ = "SELECT sequence FROM agent_session_events WHERE session_id = $1 AND event_id = $2 AND tenant = $3"
_LAST = "SELECT coalesce(max(sequence), -1) FROM agent_session_events WHERE session_id = $1 AND tenant = $2"


class PostgresAgentStore(PostgresAutomationRecords):
    """:class:`~responses_bridge.store.base_agents.AgentStore` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def put(self, kind: str, record_id: str, body: dict[str, Any], *, tenant: str, parent: str | None = None,
                  scope: str | None = None) -> None:
        async with self._db.transaction("put_agent_record") as conn:
            text = pg_json(body)
            await conn.execute(PUT_RECORD, kind, record_id, tenant, parent, scope, text,
                               charged_bytes(kind, body, text))

    async def commit(self, session_id: str, records: list[Record], events: list[tuple[int, str, bytes]], *,
                     tenant: str, owner: str | None = None) -> None:
        async with self._db.transaction("commit_agent_records") as conn:
            await _fence(conn, session_id, owner)
            if records:
                texts = [pg_json(r.body) for r in records]
                await conn.executemany(PUT_RECORD, [(r.kind, r.id, tenant, r.parent, r.scope, text,
                                                     charged_bytes(r.kind, r.body, text))
                                                    for r, text in zip(records, texts, strict=True)])
            if events:
                await conn.executemany(_APPEND, [(session_id, sequence, event_id, tenant, frame)
                                                 for sequence, event_id, frame in events])

    async def get(self, kind: str, record_id: str, *, tenant: str) -> dict[str, Any] | None:
        async with self._db.acquire() as conn:
            blob = await conn.fetchval(_GET, kind, record_id, tenant)
        return None if blob is None else orjson.loads(blob)

    async def page(self, kind: str, *, tenant: str, parent: str | None = None, scope: str | None = None,
                   after: str | None = None, limit: int = 20, order: str = "desc",
                   metadata: list[tuple[str, str]] | None = None) -> RecordPage:
        check_page_args(limit, order)
        params: list[Any] = [tenant, kind]
        sql = "SELECT body::text FROM agent_records WHERE tenant = $1 AND kind = $2"

        def bind(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if parent is not None:
            sql += f" AND parent = {bind(parent)}"
        if scope is not None:
            sql += f" AND scope = {bind(scope)}"
        for key, value in metadata or ():
            sql += f" AND body->'metadata'->>{bind(key)} = {bind(value)}"
        async with self._db.acquire() as conn:
            if after is not None:
                seq = await conn.fetchval(_SEQ, kind, after, tenant)
                if seq is None:
                    raise InvalidCursor("after", after)
                sql += f" AND seq {'>' if order == 'asc' else '<'} {bind(seq)}"
            sql += f" ORDER BY seq {'ASC' if order == 'asc' else 'DESC'} LIMIT {bind(limit + 1)}"
            rows = await conn.fetch(sql, *params)
        return RecordPage([orjson.loads(row[0]) for row in rows[:limit]], len(rows) > limit)

    async def delete(self, kind: str, record_id: str, *, tenant: str) -> bool:
        async with self._db.transaction("delete_agent_record") as conn:
            if await conn.execute(_DELETE, kind, record_id, tenant) == "DELETE 0":
                return False
            if kind == "session":
                await conn.execute(_DELETE_SUBAGENTS_RECORDS, tenant, record_id)
                await conn.execute(_DELETE_CHILDREN, record_id, tenant, CHILD_KINDS)
                await conn.execute(_DELETE_EVENTS, record_id, tenant)
                await conn.execute("DELETE FROM agent_session_owners WHERE session_id = $1", record_id)
            if kind in OWNED_KINDS:  # an automation's invocations, a vault's credentials
                await conn.execute(_DELETE_CHILDREN_OF_KIND, record_id, tenant, OWNED_KINDS[kind])
            if kind == "automation":
                await conn.execute("DELETE FROM agent_automation_firings WHERE automation_id = $1", record_id)
                await conn.execute("DELETE FROM agent_automation_versions WHERE automation_id = $1", record_id)
            return True

    async def count(self, kind: str, *, tenant: str) -> int:
        async with self._db.acquire() as conn:
            return int(await conn.fetchval(_COUNT, kind, tenant))

    async def in_use(self) -> bool:
        async with self._db.acquire() as conn:
            return bool(await conn.fetchval(_IN_USE))

    async def unfinished_sessions(self, limit: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        async with self._db.acquire() as conn:
            rows = await conn.fetch(_UNFINISHED, limit)
        return [(str(row[0]), orjson.loads(row[1])) for row in rows]

    async def claim_session(self, session_id: str, owner: str, *, seconds: float) -> bool:
        async with self._db.transaction("claim_agent_session") as conn:
            return await conn.fetchval(_CLAIM, session_id, owner, float(seconds)) is not None

    async def renew_sessions(self, session_ids: list[str], owner: str, *, seconds: float) -> set[str]:
        async with self._db.transaction("renew_agent_sessions") as conn:
            rows = await conn.fetch(_RENEW, session_ids, owner, float(seconds))
        return {str(row[0]) for row in rows}

    async def release_session(self, session_id: str, owner: str) -> None:
        async with self._db.transaction("release_agent_session") as conn:
            await conn.execute(_RELEASE, session_id, owner)

    async def append_events(self, session_id: str, events: list[tuple[int, str, bytes]], *, tenant: str,
                            owner: str | None = None) -> None:
        if not events:
            return
        async with self._db.transaction("append_agent_events") as conn:
            await _fence(conn, session_id, owner)
            await conn.executemany(_APPEND, [(session_id, sequence, event_id, tenant, frame)
                                             for sequence, event_id, frame in events])

    async def events_after(self, session_id: str, after: int, *, tenant: str,
                           limit: int = 1000) -> list[tuple[int, str, bytes]]:
        async with self._db.acquire() as conn:
            rows = await conn.fetch(_AFTER, session_id, tenant, after, limit)
        return [(int(row[0]), str(row[1]), bytes(row[2])) for row in rows]

    async def event_sequence(self, session_id: str, event_id: str, *, tenant: str) -> int | None:
        async with self._db.acquire() as conn:
            sequence = await conn.fetchval(_EVENT_SEQ, session_id, event_id, tenant)
        return None if sequence is None else int(sequence)

    async def last_event(self, session_id: str, *, tenant: str) -> int:
        async with self._db.acquire() as conn:
            return int(await conn.fetchval(_LAST, session_id, tenant))


async def _fence(conn: Connection, session_id: str, owner: str | None) -> None:
    """Inside the write's transaction: :class:`LeaseLost` unless ``owner`` (when given) holds the session's lease."""
    if owner is not None and await conn.fetchval(_HELD, session_id, owner) is None:
        raise LeaseLost(session_id)
