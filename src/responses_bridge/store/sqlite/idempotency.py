"""``Idempotency-Key`` records on the response store's SQLite database (same connections; table of migration 30),
and beside them the other small keyed records that expire: which replica of an upstream served each chain (table of
migration 33: what every worker of one ``serve --workers`` finds; replicas/persist.py).

A claim is one ``BEGIN IMMEDIATE`` transaction: the live record is read and, when there is none (or it expired),
the new one written, under SQLite's one writer, so of two requests with the same key at once exactly one claims it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..records import IdempotencyRecord
from .responses import SQLiteResponseStore


class SQLiteIdempotencyStore:
    """:class:`~responses_bridge.store.base.IdempotencyStore` sharing a :class:`SQLiteResponseStore`'s connections."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    async def claim_key(self, key: str, fingerprint: str, *, tenant: str, now: int,
                        expires_at: int) -> IdempotencyRecord | None:
        def claim(conn: sqlite3.Connection) -> Any:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT fingerprint, response_id, expires_at FROM idempotency_keys "
                                   "WHERE tenant = ? AND key = ? AND expires_at > ?", (tenant, key, now)).fetchone()
                if row is None:
                    conn.execute("INSERT OR REPLACE INTO idempotency_keys (tenant, key, fingerprint, response_id, "
                                 "expires_at) VALUES (?, ?, ?, NULL, ?)", (tenant, key, fingerprint, expires_at))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return row

        row = await self._db.run_write("claim_idempotency_key", claim)
        return None if row is None else IdempotencyRecord(row[0], row[1], int(row[2]))

    async def finish_key(self, key: str, response_id: str, *, tenant: str) -> None:
        async with self._db.writing() as conn:
            await conn.execute("UPDATE idempotency_keys SET response_id = ? WHERE tenant = ? AND key = ?",
                               (response_id, tenant, key))

    async def release_key(self, key: str, *, tenant: str) -> None:
        async with self._db.writing() as conn:
            await conn.execute("DELETE FROM idempotency_keys WHERE tenant = ? AND key = ? AND response_id IS NULL",
                               (tenant, key))

    async def purge_keys(self, now: int, *, limit: int) -> int:
        async with self._db.writing() as conn:
            cursor = await conn.execute(
                "DELETE FROM idempotency_keys WHERE (tenant, key) IN (SELECT tenant, key FROM idempotency_keys "
                "WHERE expires_at <= ? LIMIT ?)", (now, limit))
            return int(cursor.rowcount)


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
