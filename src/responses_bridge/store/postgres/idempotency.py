"""``Idempotency-Key`` records on PostgreSQL (table of migration 29), shared by every replica: a retry that lands on
another replica finds the first one's claim. Beside them the other small keyed records that expire: which replica of
an upstream served each chain (table of migration 32; replicas/persist.py), so a background run resumed elsewhere, a
turn that lands on another bridge, finds the replica holding its prefix.

A claim is one statement: the insert, or on a conflict the takeover of an expired record (``ON CONFLICT … DO UPDATE
… WHERE`` the old one expired), so of two requests with the same key at once exactly one claims it; the other reads
the record that holds it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..records import IdempotencyRecord
from .database import PostgresDatabase

_CLAIM = (
    "INSERT INTO idempotency_keys (tenant, key, fingerprint, response_id, expires_at) VALUES ($1, $2, $3, NULL, $5) "
    "ON CONFLICT (tenant, key) DO UPDATE SET fingerprint = excluded.fingerprint, response_id = NULL, "
    "expires_at = excluded.expires_at WHERE idempotency_keys.expires_at <= $4 RETURNING 1")
_HELD = ("SELECT fingerprint, response_id, expires_at FROM idempotency_keys "
         "WHERE tenant = $1 AND key = $2 AND expires_at > $3")


class PostgresIdempotencyStore:
    """:class:`~responses_bridge.store.base.IdempotencyStore` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def claim_key(self, key: str, fingerprint: str, *, tenant: str, now: int,
                        expires_at: int) -> IdempotencyRecord | None:
        async with self._db.transaction("claim_idempotency_key") as conn:
            if await conn.fetchval(_CLAIM, tenant, key, fingerprint, now, expires_at) is not None:
                return None
            row = await conn.fetchrow(_HELD, tenant, key, now)
        if row is None:  # deleted (released) between the two statements: free again
            return await self.claim_key(key, fingerprint, tenant=tenant, now=now, expires_at=expires_at)
        return IdempotencyRecord(row[0], row[1], int(row[2]))

    async def finish_key(self, key: str, response_id: str, *, tenant: str) -> None:
        async with self._db.acquire("finish_idempotency_key") as conn:
            await conn.execute("UPDATE idempotency_keys SET response_id = $3 WHERE tenant = $1 AND key = $2",
                               tenant, key, response_id)

    async def release_key(self, key: str, *, tenant: str) -> None:
        async with self._db.acquire("release_idempotency_key") as conn:
            await conn.execute("DELETE FROM idempotency_keys WHERE tenant = $1 AND key = $2 AND response_id IS NULL",
                               tenant, key)

    async def purge_keys(self, now: int, *, limit: int) -> int:
        async with self._db.acquire("purge_idempotency_keys") as conn:
            status = await conn.execute(
                "DELETE FROM idempotency_keys WHERE (tenant, key) IN (SELECT tenant, key FROM idempotency_keys "
                "WHERE expires_at <= $1 LIMIT $2)", now, limit)
        return int(status.rsplit(" ", 1)[-1])


class PostgresReplicaChainStore:
    """:class:`~responses_bridge.store.base.ReplicaChainStore` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def find_replica(self, upstream: str, keys: Sequence[str]) -> str | None:
        if not keys:
            return None
        async with self._db.acquire("find_replica") as conn:
            rows = await conn.fetch("SELECT key, replica FROM replica_chains WHERE upstream = $1 AND key = ANY($2)",
                                    upstream, list(keys))
        found = {row[0]: row[1] for row in rows}
        return next((found[key] for key in keys if key in found), None)

    async def bind_replicas(self, bindings: Sequence[tuple[str, str, str, int]]) -> None:
        if not bindings:
            return
        latest = {(upstream, key): (replica, at) for upstream, key, replica, at in bindings}  # one row per key
        async with self._db.acquire("bind_replicas") as conn:
            await conn.executemany(
                "INSERT INTO replica_chains (upstream, key, replica, at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (upstream, key) DO UPDATE SET replica = excluded.replica, at = excluded.at",
                [(upstream, key, replica, at) for (upstream, key), (replica, at) in latest.items()])

    async def purge_replica_chains(self, before: int, *, limit: int) -> int:
        async with self._db.acquire("purge_replica_chains") as conn:
            status = await conn.execute(
                "DELETE FROM replica_chains WHERE (upstream, key) IN (SELECT upstream, key FROM replica_chains "
                "WHERE at < $1 LIMIT $2)", before, limit)
        return int(status.rsplit(" ", 1)[-1])
