"""The Agents API's records and session events on the response store's SQLite database (store/base_agents.py): same
file, same write connection and lock. Every statement names the tenant; another tenant's record is no record."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import orjson

from ...base_agents import OWNED_KINDS, Record, RecordPage
from ...records import InvalidCursor, LeaseLost, check_page_args
from ..responses import SQLiteResponseStore
from ..transactions import transaction
from .agent_schema import PUT_RECORD
from .automations import SQLiteAutomationRecords

CHILD_KINDS = ("turn", "item", "key", "artifact", "subagent", "trace")
# what goes with its session (an agent's sessions outlive it), and with each of its subagents its turns and items:
_DELETE_SUBAGENTS_RECORDS = (
    "DELETE FROM agent_records WHERE tenant = ? AND kind IN ('subagent_turn', 'subagent_item') AND parent IN "
    "(SELECT id FROM agent_records WHERE kind = 'subagent' AND parent = ? AND tenant = ?)")

_GET = "SELECT body FROM agent_records WHERE kind = ? AND id = ? AND tenant = ?"
_SEQ = "SELECT seq FROM agent_records WHERE kind = ? AND id = ? AND tenant = ?"
_DELETE = "DELETE FROM agent_records WHERE kind = ? AND id = ? AND tenant = ?"
_DELETE_CHILDREN = ("DELETE FROM agent_records WHERE parent = ? AND tenant = ? AND kind IN "
                    f"({', '.join('?' for _ in CHILD_KINDS)})")
_DELETE_EVENTS = "DELETE FROM agent_session_events WHERE session_id = ? AND tenant = ?"
_DELETE_CHILDREN_OF_KIND = "DELETE FROM agent_records WHERE parent = ? AND tenant = ? AND kind = ?"
_COUNT = "SELECT count(*) FROM agent_records WHERE kind = ? AND tenant = ?"
_IN_USE = "SELECT 1 FROM agent_records LIMIT 1"
_UNFINISHED = ("SELECT tenant, body FROM agent_records WHERE kind = 'session' "
               "AND json_extract(body, '$.status') IN ('in_progress', 'requires_action') LIMIT ?")
_CLAIM = ("INSERT INTO agent_session_owners (session_id, owner, expires_at) VALUES (?, ?, ?) "
          "ON CONFLICT (session_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
          "WHERE agent_session_owners.owner = excluded.owner OR agent_session_owners.expires_at < ?")
_RELEASE = "DELETE FROM agent_session_owners WHERE session_id = ? AND owner = ?"
_RENEW = "UPDATE agent_session_owners SET expires_at = ? WHERE session_id = ? AND owner = ? AND expires_at > ?"
_HELD = "SELECT 1 FROM agent_session_owners WHERE session_id = ? AND owner = ? AND expires_at > ?"
_APPEND = ("INSERT OR IGNORE INTO agent_session_events (session_id, sequence, event_id, tenant, frame) "
           "VALUES (?, ?, ?, ?, ?)")
_AFTER = ("SELECT sequence, event_id, frame FROM agent_session_events WHERE session_id = ? AND tenant = ? "
          "AND sequence > ? ORDER BY sequence LIMIT ?")
_EVENT_SEQ = "SELECT sequence FROM agent_session_events WHERE session_id = ? AND event_id = ? AND tenant = ?"
_LAST = "SELECT coalesce(max(sequence), -1) FROM agent_session_events WHERE session_id = ? AND tenant = ?"
_METADATA = " AND EXISTS (SELECT 1 FROM json_each(body, '$.metadata') WHERE key = ? AND value = ?)"


class SQLiteAgentStore(SQLiteAutomationRecords):
    """:class:`~responses_bridge.store.base_agents.AgentStore` sharing a :class:`SQLiteResponseStore`'s
    connections."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    async def put(self, kind: str, record_id: str, body: dict[str, Any], *, tenant: str, parent: str | None = None,
                  scope: str | None = None) -> None:
        blob = orjson.dumps(body).decode()
        async with self._db.writing() as conn:
            await conn.execute(PUT_RECORD, (kind, record_id, tenant, parent, scope, blob))

    async def commit(self, session_id: str, records: list[Record], events: list[tuple[int, str, bytes]], *,
                     tenant: str, owner: str | None = None) -> None:
        rows = [(r.kind, r.id, tenant, r.parent, r.scope, orjson.dumps(r.body).decode()) for r in records]
        frames = [(session_id, sequence, event_id, tenant, frame) for sequence, event_id, frame in events]

        def commit(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                _fence(conn, session_id, owner)
                conn.executemany(PUT_RECORD, rows)
                conn.executemany(_APPEND, frames)

        await self._db.run_write("commit_agent_records", commit)

    async def get(self, kind: str, record_id: str, *, tenant: str) -> dict[str, Any] | None:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(_GET, (kind, record_id, tenant)))
        return orjson.loads(rows[0][0]) if rows else None

    async def page(self, kind: str, *, tenant: str, parent: str | None = None, scope: str | None = None,
                   after: str | None = None, limit: int = 20, order: str = "desc",
                   metadata: list[tuple[str, str]] | None = None) -> RecordPage:
        check_page_args(limit, order)
        sql = "SELECT body FROM agent_records WHERE tenant = ? AND kind = ?"
        params: list[Any] = [tenant, kind]
        if parent is not None:
            sql += " AND parent = ?"
            params.append(parent)
        if scope is not None:
            sql += " AND scope = ?"
            params.append(scope)
        for key, value in metadata or ():
            sql += _METADATA
            params += [key, value]
        async with self._db.reading() as conn:
            if after is not None:
                found = list(await conn.execute_fetchall(_SEQ, (kind, after, tenant)))
                if not found:
                    raise InvalidCursor("after", after)
                sql += " AND seq > ?" if order == "asc" else " AND seq < ?"
                params.append(found[0][0])
            sql += f" ORDER BY seq {'ASC' if order == 'asc' else 'DESC'} LIMIT ?"
            params.append(limit + 1)
            rows = list(await conn.execute_fetchall(sql, params))
        return RecordPage([orjson.loads(row[0]) for row in rows[:limit]], len(rows) > limit)

    async def delete(self, kind: str, record_id: str, *, tenant: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                if conn.execute(_DELETE, (kind, record_id, tenant)).rowcount == 0:
                    return False
                if kind == "session":
                    conn.execute(_DELETE_SUBAGENTS_RECORDS, (tenant, record_id, tenant))
                    conn.execute(_DELETE_CHILDREN, (record_id, tenant, *CHILD_KINDS))
                    conn.execute(_DELETE_EVENTS, (record_id, tenant))
                    conn.execute("DELETE FROM agent_session_owners WHERE session_id = ?", (record_id,))
                if kind in OWNED_KINDS:  # an automation's invocations, a vault's credentials
                    conn.execute(_DELETE_CHILDREN_OF_KIND, (record_id, tenant, OWNED_KINDS[kind]))
                if kind == "automation":
                    conn.execute("DELETE FROM agent_automation_firings WHERE automation_id = ?", (record_id,))
                    conn.execute("DELETE FROM agent_automation_versions WHERE automation_id = ?", (record_id,))
                return True

        return await self._db.run_write("delete_agent_record", delete)

    async def count(self, kind: str, *, tenant: str) -> int:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(_COUNT, (kind, tenant)))
        return int(rows[0][0])

    async def in_use(self) -> bool:
        async with self._db.reading() as conn:
            return bool(list(await conn.execute_fetchall(_IN_USE)))

    async def unfinished_sessions(self, limit: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(_UNFINISHED, (limit,))
        return [(str(tenant), orjson.loads(body)) for tenant, body in rows]

    async def claim_session(self, session_id: str, owner: str, *, seconds: float) -> bool:
        def claim(conn: sqlite3.Connection) -> bool:
            now = time.time()  # one file is one host's: its clock is the database's (every worker reads the same)
            with transaction(conn):
                return conn.execute(_CLAIM, (session_id, owner, now + seconds, now)).rowcount > 0

        return await self._db.run_write("claim_agent_session", claim)

    async def renew_sessions(self, session_ids: list[str], owner: str, *, seconds: float) -> set[str]:
        def renew(conn: sqlite3.Connection) -> set[str]:
            now = time.time()
            with transaction(conn):
                return {session_id for session_id in session_ids
                        if conn.execute(_RENEW, (now + seconds, session_id, owner, now)).rowcount > 0}

        return await self._db.run_write("renew_agent_sessions", renew)

    async def release_session(self, session_id: str, owner: str) -> None:
        async with self._db.writing() as conn:
            await conn.execute(_RELEASE, (session_id, owner))

    async def append_events(self, session_id: str, events: list[tuple[int, str, bytes]], *, tenant: str,
                            owner: str | None = None) -> None:
        if not events:
            return
        rows = [(session_id, sequence, event_id, tenant, frame) for sequence, event_id, frame in events]
        if owner is None:
            async with self._db.writing() as conn:
                await conn.executemany(_APPEND, rows)
            return

        def append(conn: sqlite3.Connection) -> None:
            with transaction(conn):  # the write lock: no claim between the fence and the rows
                _fence(conn, session_id, owner)
                conn.executemany(_APPEND, rows)

        await self._db.run_write("append_agent_events", append)

    async def events_after(self, session_id: str, after: int, *, tenant: str,
                           limit: int = 1000) -> list[tuple[int, str, bytes]]:
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(_AFTER, (session_id, tenant, after, limit))
        return [(int(sequence), str(event_id), bytes(frame)) for sequence, event_id, frame in rows]

    async def event_sequence(self, session_id: str, event_id: str, *, tenant: str) -> int | None:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(_EVENT_SEQ, (session_id, event_id, tenant)))
        return int(rows[0][0]) if rows else None

    async def last_event(self, session_id: str, *, tenant: str) -> int:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(_LAST, (session_id, tenant)))
        return int(rows[0][0])


def _fence(conn: sqlite3.Connection, session_id: str, owner: str | None) -> None:
    """Inside the write's transaction: :class:`LeaseLost` unless ``owner`` (when given) holds the session's lease
    (by this host's clock, the database's for one file)."""
    if owner is not None and conn.execute(_HELD, (session_id, owner, time.time())).fetchone() is None:
        raise LeaseLost(session_id)
