"""The automations' scheduler on SQLite (store/base_agents.py's automation methods): the due occurrences dealt
across tenants in turn, each firing claimed once and counted against its tenant's rate in the claiming
transaction, and the automations' versions and invocations kept within their bounds. SQLite has one writer at a
time, so the count and the claim see every firing committed before."""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Literal

import orjson

from ..db_thread import on_db_thread
from ..responses import SQLiteResponseStore
from ..transactions import transaction
from .agent_schema import PUT_RECORD

# the due automations' keys through the index on ``due_at`` (agent_schema.py's AUTOMATION_DUE_INDEX), dealt
# across tenants in turn; the bodies read of those chosen only
_DUE = ("SELECT r.tenant, r.body FROM (SELECT seq, due_at, "
        "row_number() OVER (PARTITION BY tenant ORDER BY due_at, seq) AS turn "
        "FROM agent_records WHERE due_at <= ?1 ORDER BY turn, due_at, seq LIMIT ?2) AS due "
        "JOIN agent_records AS r ON r.seq = due.seq ORDER BY due.turn, due.due_at, due.seq")
_ANY_DUE = "SELECT 1 FROM agent_records WHERE due_at <= ? LIMIT 1"
"""Whether anything is due, through the same index: the scheduler asks every second, and the dealing query's window
and sorts cost ~200 µs even over no rows (~5 µs this), so a tick with nothing due does only this."""
_ADVANCE = ("UPDATE agent_records SET body = json_set(body, '$._next_at', ?, '$.status', ?) "
            "WHERE kind = 'automation' AND id = ? AND json_extract(body, '$.status') = 'active' "
            "AND json_extract(body, '$._next_at') = ?")
_FIRE = ("INSERT INTO agent_automation_firings (automation_id, scheduled_at, invocation_id, tenant, fired_at, "
         "accepted) SELECT ?1, ?2, ?3, ?4, ?5, (SELECT count(*) FROM agent_automation_firings "
         "WHERE tenant = ?4 AND fired_at > ?5 - 60 AND accepted = 1) < ?6 WHERE EXISTS (SELECT 1 FROM agent_records "
         "WHERE kind = 'automation' AND id = ?1 AND tenant = ?4 AND json_extract(body, '$.status') = 'active' "
         "AND json_extract(body, '$._next_at') = ?2) ON CONFLICT DO NOTHING")
"""The firing claimed only while the automation is still active at that occurrence: a pause, an edit or a delete
answered before the claim stops it (writes are one at a time, so nothing lands between this check and the insert)."""
_FIRED = "SELECT accepted FROM agent_automation_firings WHERE automation_id = ? AND scheduled_at = ?"
_KEEP_VERSION = ("INSERT INTO agent_automation_versions (automation_id, digest, tenant, created_at, body, bytes) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, length(CAST(?5 AS BLOB))) ON CONFLICT DO NOTHING")
_VERSIONS = ("SELECT digest, body FROM agent_automation_versions WHERE automation_id = ? AND tenant = ? "
             "AND digest IN (SELECT value FROM json_each(?))")
_FORGET_BEYOND = ("DELETE FROM agent_records WHERE tenant = ?1 AND kind = 'invocation' AND parent = ?2 AND seq <= "
                  "(SELECT seq FROM agent_records WHERE tenant = ?1 AND kind = 'invocation' AND parent = ?2 "
                  "ORDER BY seq DESC LIMIT 1 OFFSET ?3)")
_UNUSED_VERSIONS = ("DELETE FROM agent_automation_versions WHERE created_at < ?1 AND {which} AND NOT EXISTS "
                    "(SELECT 1 FROM agent_records AS r WHERE r.tenant = agent_automation_versions.tenant "
                    "AND r.kind = 'invocation' AND r.parent = agent_automation_versions.automation_id "
                    "AND json_extract(r.body, '$._source_version') = agent_automation_versions.digest)")
_FORGET_OLD = ("DELETE FROM agent_records WHERE rowid IN (SELECT rowid FROM agent_records WHERE kind = 'invocation' "
               "AND json_extract(body, '$.created_at') < ? LIMIT ?)")
_FORGET_FIRINGS = "DELETE FROM agent_automation_firings WHERE coalesce(fired_at, scheduled_at) < ?"
_DELETE_VERSIONS = "DELETE FROM agent_automation_versions WHERE automation_id = ?"


class SQLiteAutomationRecords:
    """The automation half of :class:`~responses_bridge.store.sqlite.agents.agents.SQLiteAgentStore`."""

    _db: SQLiteResponseStore

    async def database_time(self) -> float:
        return time.time()  # one file is one host's: its clock is the database's

    async def due_automations(self, now: float, limit: int = 100) -> list[tuple[str, dict[str, Any]]]:
        def due(raw: sqlite3.Connection) -> list[Any]:
            if raw.execute(_ANY_DUE, (now,)).fetchone() is None:
                return []
            return raw.execute(_DUE, (now, limit)).fetchall()

        async with self._db.reading() as conn:
            rows = await on_db_thread(conn, due)
        return [(str(tenant), orjson.loads(body)) for tenant, body in rows]

    async def advance_automation(self, automation_id: str, scheduled_at: int, next_at: int | None,
                                 status: str) -> bool:
        def advance(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                return conn.execute(_ADVANCE, (next_at, status, automation_id, scheduled_at)).rowcount > 0

        return await self._db.run_write("advance_automation", advance)

    async def claim_firing(self, automation_id: str, scheduled_at: int, invocation: dict[str, Any], *,
                           tenant: str, now: float, per_minute: int) -> Literal["fired", "over_rate"] | None:
        blob = orjson.dumps(invocation).decode()

        def claim(conn: sqlite3.Connection) -> Literal["fired", "over_rate"] | None:
            with transaction(conn):
                if conn.execute(_FIRE, (automation_id, scheduled_at, invocation["id"], tenant, now,
                                        per_minute)).rowcount == 0:
                    return None
                conn.execute(PUT_RECORD, ("invocation", invocation["id"], tenant, automation_id, None, blob))
                accepted = conn.execute(_FIRED, (automation_id, scheduled_at)).fetchone()[0]
                return "fired" if accepted else "over_rate"

        return await self._db.run_write("claim_automation_firing", claim)

    async def keep_version(self, automation_id: str, digest: str, body: dict[str, Any], *, tenant: str,
                           now: float) -> None:
        blob = orjson.dumps(body).decode()
        async with self._db.writing() as conn:
            await conn.execute(_KEEP_VERSION, (automation_id, digest, tenant, now, blob))

    async def automation_versions(self, automation_id: str, digests: list[str], *,
                                  tenant: str) -> dict[str, dict[str, Any]]:
        if not digests:
            return {}
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(_VERSIONS, (automation_id, tenant, orjson.dumps(digests).decode()))
        return {str(digest): orjson.loads(body) for digest, body in rows}

    async def forget_invocations(self, automation_id: str, *, keep: int, tenant: str, settled: float) -> int:
        def forget(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                gone = conn.execute(_FORGET_BEYOND, (tenant, automation_id, keep)).rowcount
                if gone:
                    conn.execute(_UNUSED_VERSIONS.format(which="automation_id = ?2"), (settled, automation_id))
                return gone

        return await self._db.run_write("forget_automation_invocations", forget)

    async def forget_expired(self, before: float, *, settled: float, limit: int = 10_000) -> int:
        def forget(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                gone = conn.execute(_FORGET_OLD, (int(before), limit)).rowcount
                conn.execute(_FORGET_FIRINGS, (settled - 3600,))
                conn.execute(_UNUSED_VERSIONS.format(which="true"), (settled,))
                return gone

        return await self._db.run_write("forget_expired_invocations", forget)
