"""Which replica served each chain, on PostgreSQL (table of migration 32), shared by every replica of the bridge:
a background run resumed elsewhere, a turn that lands on another bridge, finds the replica holding its prefix."""

from __future__ import annotations

from collections.abc import Sequence

from .database import PostgresDatabase


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
