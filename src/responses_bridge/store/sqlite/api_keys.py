"""The bridge's own API keys (``RESPONSES_BRIDGE_AUTH=keys``): which tenant a key belongs to, and whether it works.

A key is ``rbk_<id>_<secret>``: ``id`` (12 hex digits) names the stored row, so resolving a key is one primary-key
read; ``secret`` (32 random bytes, urlsafe base64) is never stored, only ``HMAC-SHA256(salt, secret)`` with a salt
of the row's own. The secret is high-entropy, so one keyed hash is enough (a slow password hash would only cost
every request time); the comparison is constant-time (:func:`hmac.compare_digest`).

:class:`ApiKeyStore` is what a backing store implements (SQLite here, on the response store's connections;
PostgreSQL alike): four operations, with the minting, parsing and checking of keys in the functions of this
module, so every implementation stores and checks keys the same way. The console's sign-outs (table
``console_sign_outs``, migration 32) are kept here too: a sign-in is a key's use.
"""

from __future__ import annotations

import time

from ..keys import _COLUMNS, key_from_row, matches, mint, parse
from ..records import ApiKey, Resolved, StoredKey
from .responses import SQLiteResponseStore


class SQLiteApiKeyStore:
    """:class:`ApiKeyStore` sharing a :class:`SQLiteResponseStore`'s connections (table ``api_keys``, migration 12)."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    async def create_key(self, tenant: str, *, expires_at: int | None = None,
                         operator: bool = False) -> tuple[str, ApiKey]:
        text, stored = mint(tenant, expires_at=expires_at, operator=operator)
        row = stored.key
        async with self._db.writing() as conn:
            await conn.execute(
                "INSERT INTO api_keys (id, tenant, salt, secret_hash, created_at, expires_at, operator) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.tenant, stored.salt, stored.secret_hash, row.created_at, row.expires_at,
                 int(row.operator)))
        return text, row

    async def list_keys(self) -> list[ApiKey]:
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id")
        return [key_from_row(tuple(row)) for row in rows]

    async def find_key(self, key_id: str) -> ApiKey | None:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)))
        return key_from_row(tuple(rows[0])) if rows else None

    async def revoke_key(self, key_id: str) -> bool:
        async with self._db.writing() as conn:
            cursor = await conn.execute("UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                                        (int(time.time()), key_id))
            return cursor.rowcount > 0

    async def end_sign_in(self, sign_in: str, expires_at: int) -> None:
        async with self._db.writing() as conn:
            await conn.execute("DELETE FROM console_sign_outs WHERE expires_at <= ?", (int(time.time()),))
            await conn.execute("INSERT OR REPLACE INTO console_sign_outs (sign_in, expires_at) VALUES (?, ?)",
                               (sign_in, expires_at))

    async def sign_in_ended(self, sign_in: str) -> bool:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall("SELECT 1 FROM console_sign_outs WHERE sign_in = ?", (sign_in,)))
        return bool(rows)

    async def resolve_key(self, key: str) -> Resolved | None:
        parsed = parse(key)
        if parsed is None:
            return None
        key_id, secret = parsed
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(
                f"SELECT {_COLUMNS}, salt, secret_hash FROM api_keys WHERE id = ?", (key_id,)))
        if not rows:
            return None
        row = tuple(rows[0])
        stored = StoredKey(key_from_row(row), bytes(row[6]), bytes(row[7]))
        return Resolved(stored.key) if matches(stored, secret) else None
