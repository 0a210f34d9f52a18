"""The automations' scheduler on PostgreSQL (store/base_agents.py's automation methods), as on SQLite
(store/sqlite/agents/automations.py): the due occurrences dealt across tenants in turn, each firing claimed once and
counted against its tenant's rate in the claiming transaction — under a transaction lock of the tenant's, so replicas
claiming at once count each other's — and the automations' versions and invocations kept within their bounds."""

from __future__ import annotations

from typing import Any, Literal

import orjson

from ...base_agents import charged_bytes
from ..database import PostgresDatabase
from ..sql import pg_json
from .agent_schema import PUT_RECORD

# as on SQLite: the due automations' keys through the index on ``due_at``, the bodies of those chosen only
_DUE = ("SELECT r.tenant, r.body::text FROM (SELECT seq, due_at, "
        "row_number() OVER (PARTITION BY tenant ORDER BY due_at, seq) AS turn "
        "FROM agent_records WHERE due_at <= $1 ORDER BY turn, due_at, seq LIMIT $2) AS due "
        "JOIN agent_records AS r ON r.seq = due.seq ORDER BY due.turn, due.due_at, due.seq")
_ADVANCE = ("UPDATE agent_records SET body = body || jsonb_build_object('_next_at', $1::bigint, 'status', $2::text) "
            "WHERE kind = 'automation' AND id = $3 AND body->>'status' = 'active' "
            "AND (body->>'_next_at')::bigint = $4 RETURNING id")
_RATE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('agent-automation-rate:' || $1, 0))"
_STILL_DUE = ("SELECT 1 FROM agent_records WHERE kind = 'automation' AND id = $1 AND tenant = $2 "
              "AND body->>'status' = 'active' AND (body->>'_next_at')::bigint = $3 FOR SHARE")
"""The automation still active at the occurrence being claimed, its row held until the claim commits: a pause, an
edit or a delete answered before the claim stops it, and one arriving during it waits for the claim (the firing and
its invocation then precede it, both listed when it answers)."""
_FIRE = ("INSERT INTO agent_automation_firings (automation_id, scheduled_at, invocation_id, tenant, fired_at, "
         "accepted) SELECT $1, $2, $3, $4::text, $5::float8, (SELECT count(*) FROM agent_automation_firings "
         "WHERE tenant = $4::text AND fired_at > $5::float8 - 60 AND accepted) < $6 "
         "ON CONFLICT DO NOTHING RETURNING accepted")
_KEEP_VERSION = ("INSERT INTO agent_automation_versions (automation_id, digest, tenant, created_at, body, bytes) "
                 "VALUES ($1, $2, $3, $4, $5::jsonb, octet_length($5::jsonb::text)) ON CONFLICT DO NOTHING")
_VERSIONS = ("SELECT digest, body::text FROM agent_automation_versions WHERE automation_id = $1 AND tenant = $2 "
             "AND digest = ANY($3::text[])")
_FORGET_BEYOND = ("DELETE FROM agent_records WHERE tenant = $1 AND kind = 'invocation' AND parent = $2 AND seq <= "
                  "(SELECT seq FROM agent_records WHERE tenant = $1 AND kind = 'invocation' AND parent = $2 "
                  "ORDER BY seq DESC LIMIT 1 OFFSET $3)")
_UNUSED_VERSIONS = ("DELETE FROM agent_automation_versions AS v WHERE v.created_at < $1 AND {which} AND NOT EXISTS "
                    "(SELECT 1 FROM agent_records AS r WHERE r.tenant = v.tenant AND r.kind = 'invocation' "
                    "AND r.parent = v.automation_id AND r.body->>'_source_version' = v.digest)")
_FORGET_OLD = ("DELETE FROM agent_records WHERE seq IN (SELECT seq FROM agent_records WHERE kind = 'invocation' "
               "AND (body->>'created_at')::bigint < $1 LIMIT $2)")
_FORGET_FIRINGS = "DELETE FROM agent_automation_firings WHERE coalesce(fired_at, scheduled_at) < $1"


class PostgresAutomationRecords:
    """The automation half of :class:`~responses_bridge.store.postgres.agents.agents.PostgresAgentStore`."""

    _db: PostgresDatabase

    async def database_time(self) -> float:
        async with self._db.acquire() as conn:
            return float(await conn.fetchval("SELECT extract(epoch from clock_timestamp())::float8"))

    async def due_automations(self, now: float, limit: int = 100) -> list[tuple[str, dict[str, Any]]]:
        async with self._db.acquire() as conn:
            rows = await conn.fetch(_DUE, now, limit)
        return [(str(row[0]), orjson.loads(row[1])) for row in rows]

    async def advance_automation(self, automation_id: str, scheduled_at: int, next_at: int | None,
                                 status: str) -> bool:
        async with self._db.transaction("advance_automation") as conn:
            return await conn.fetchval(_ADVANCE, next_at, status, automation_id, scheduled_at) is not None

    async def claim_firing(self, automation_id: str, scheduled_at: int, invocation: dict[str, Any], *,
                           tenant: str, now: float, per_minute: int) -> Literal["fired", "over_rate"] | None:
        text = pg_json(invocation)
        async with self._db.transaction("claim_automation_firing") as conn:
            if await conn.fetchval(_STILL_DUE, automation_id, tenant, scheduled_at) is None:
                return None
            await conn.execute(_RATE_LOCK, tenant)
            accepted = await conn.fetchval(_FIRE, automation_id, scheduled_at, invocation["id"], tenant, now,
                                           per_minute)
            if accepted is not None:
                await conn.execute(PUT_RECORD, "invocation", invocation["id"], tenant, automation_id, None, text,
                                   charged_bytes("invocation", invocation, text))
        if accepted is None:
            return None
        return "fired" if accepted else "over_rate"

    async def keep_version(self, automation_id: str, digest: str, body: dict[str, Any], *, tenant: str,
                           now: float) -> None:
        async with self._db.transaction("keep_automation_version") as conn:
            await conn.execute(_KEEP_VERSION, automation_id, digest, tenant, now, orjson.dumps(body).decode())

    async def automation_versions(self, automation_id: str, digests: list[str], *,
                                  tenant: str) -> dict[str, dict[str, Any]]:
        if not digests:
            return {}
        async with self._db.acquire() as conn:
            rows = await conn.fetch(_VERSIONS, automation_id, tenant, digests)
        return {str(row[0]): orjson.loads(row[1]) for row in rows}

    async def forget_invocations(self, automation_id: str, *, keep: int, tenant: str, settled: float) -> int:
        async with self._db.transaction("forget_automation_invocations") as conn:
            gone = int((await conn.execute(_FORGET_BEYOND, tenant, automation_id, keep)).split()[-1])
            if gone:
                await conn.execute(_UNUSED_VERSIONS.format(which="v.automation_id = $2"), settled, automation_id)
        return gone

    async def forget_expired(self, before: float, *, settled: float, limit: int = 10_000) -> int:
        async with self._db.transaction("forget_expired_invocations") as conn:
            gone = int((await conn.execute(_FORGET_OLD, int(before), limit)).split()[-1])
            await conn.execute(_FORGET_FIRINGS, settled - 3600)
            await conn.execute(_UNUSED_VERSIONS.format(which="true"), settled)
        return gone
