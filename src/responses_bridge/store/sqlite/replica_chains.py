"""Which replica served each chain, on the response store's SQLite database (table of migration 33): what every
worker of one ``serve --workers`` finds (replicas/affinity.py's map is each process's own)."""

from __future__ import annotations

from collections.abc import Sequence

from .responses import SQLiteResponseStore


class SQLiteReplicaChainStore:
    """:class:`~responses_bridge.store.base.ReplicaChainStore` sharing a :class:`SQLiteResponseStore`'s
    connections."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    async def find_replica(self, upstream: str, keys: Sequence[str]) -> str | None:
        if not keys:
            return None
        marks = ", ".join("?" for _ in keys)
        async with self._db.reading() as conn:
            cursor = await conn.execute(
                f"SELECT key, replica FROM replica_chains WHERE upstream = ? AND key IN ({marks})",  # placeholders only
                (upstream, *keys))
            found = {str(row[0]): str(row[1]) for row in await cursor.fetchall()}
        return next((found[key] for key in keys if key in found), None)

    async def bind_replicas(self, bindings: Sequence[tuple[str, str, str, int]]) -> None:
        if not bindings:
            return
        async with self._db.writing() as conn:
            await conn.executemany("INSERT OR REPLACE INTO replica_chains (upstream, key, replica, at) "
                                   "VALUES (?, ?, ?, ?)", bindings)

    async def purge_replica_chains(self, before: int, *, limit: int) -> int:
        async with self._db.writing() as conn:
            cursor = await conn.execute(
                "DELETE FROM replica_chains WHERE (upstream, key) IN (SELECT upstream, key FROM replica_chains "
                "WHERE at < ? LIMIT ?)", (before, limit))
            return int(cursor.rowcount)
