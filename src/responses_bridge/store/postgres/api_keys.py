"""The bridge's own API keys on PostgreSQL: the :class:`~responses_bridge.store.api_keys.ApiKeyStore` every replica
shares, so a key made with ``responses-bridge keys create`` against the database works on every replica at once and
a revoked one stops working on all of them with the next request.

Keys are minted, parsed and checked by the functions of store/keys.py, exactly as on SQLite; only the salted
hash of a key's secret is stored.
"""

from __future__ import annotations

import time

from ..keys import _COLUMNS, key_from_row, matches, mint, parse
from ..records import ApiKey, Resolved, StoredKey
from .database import PostgresDatabase


class PostgresApiKeyStore:
    """:class:`~responses_bridge.store.api_keys.ApiKeyStore` on a :class:`PostgresDatabase` (table ``api_keys``)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def create_key(self, tenant: str, *, expires_at: int | None = None,
                         operator: bool = False) -> tuple[str, ApiKey]:
        text, stored = mint(tenant, expires_at=expires_at, operator=operator)
        row = stored.key
        async with self._db.acquire("create_key") as conn:
            await conn.execute(
                "INSERT INTO api_keys (id, tenant, salt, secret_hash, created_at, expires_at, operator) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                row.id, row.tenant, stored.salt, stored.secret_hash, row.created_at, row.expires_at, row.operator)
        return text, row

    async def list_keys(self) -> list[ApiKey]:
        async with self._db.acquire("list_keys") as conn:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id")
        return [key_from_row(row) for row in rows]

    async def find_key(self, key_id: str) -> ApiKey | None:
        async with self._db.acquire("find_key") as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1", key_id)
        return None if row is None else key_from_row(row)

    async def revoke_key(self, key_id: str) -> bool:
        async with self._db.acquire("revoke_key") as conn:
            status = await conn.execute("UPDATE api_keys SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2",
                                        int(time.time()), key_id)
        return int(status.rsplit(" ", 1)[-1]) > 0

    async def end_sign_in(self, sign_in: str, expires_at: int) -> None:
        async with self._db.acquire("end_sign_in") as conn:
            await conn.execute("DELETE FROM console_sign_outs WHERE expires_at <= $1", int(time.time()))
            await conn.execute("INSERT INTO console_sign_outs (sign_in, expires_at) VALUES ($1, $2) "
                               "ON CONFLICT (sign_in) DO UPDATE SET expires_at = excluded.expires_at",
                               sign_in, expires_at)

    async def sign_in_ended(self, sign_in: str) -> bool:
        async with self._db.acquire("sign_in_ended") as conn:
            return await conn.fetchval("SELECT 1 FROM console_sign_outs WHERE sign_in = $1", sign_in) is not None

    async def resolve_key(self, key: str) -> Resolved | None:
        parsed = parse(key)
        if parsed is None:
            return None
        key_id, secret = parsed
        async with self._db.acquire("resolve_key") as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS}, salt, secret_hash FROM api_keys WHERE id = $1", key_id)
        if row is None:
            return None
        stored = StoredKey(key_from_row(row), bytes(row[6]), bytes(row[7]))
        return Resolved(stored.key) if matches(stored, secret) else None


__all__ = ["PostgresApiKeyStore"]
