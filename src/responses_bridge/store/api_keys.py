"""The bridge's own API keys (``RESPONSES_BRIDGE_AUTH=keys``): which tenant a key belongs to, and whether it works.

A key is ``rbk_<id>_<secret>``: ``id`` (12 hex digits) names the stored row, so resolving a key is one primary-key
read; ``secret`` (32 random bytes, urlsafe base64) is never stored, only ``HMAC-SHA256(salt, secret)`` with a salt
of the row's own. The secret is high-entropy, so one keyed hash is enough (a slow password hash would only cost
every request time); the comparison is constant-time (:func:`hmac.compare_digest`).

:class:`ApiKeyStore` is what a backing store implements (SQLite here, on the response store's connections;
PostgreSQL alike): four operations, with the minting, parsing and checking of keys in the functions of this
module, so every implementation stores and checks keys the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol

from .sqlite import SQLiteResponseStore

KEY_PREFIX = "rbk_"
_ID_BYTES = 6
_SECRET_BYTES = 32
_SALT_BYTES = 16
_KEY_PATTERN = re.compile(r"rbk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class ApiKey:
    """A stored key as ``keys list`` shows it: never the key itself. Times are Unix seconds."""

    id: str
    tenant: str
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None

    def usable(self, now: int) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class StoredKey:
    """A row as stored: the key's public part and the salted hash of its secret."""

    key: ApiKey
    salt: bytes
    secret_hash: bytes


@dataclass(frozen=True)
class Resolved:
    """The row a presented key names, when its secret matches (the key is genuine). Whether it is still usable
    (revoked, expired) is the caller's to say: the answer differs, but only for someone holding the key."""

    key: ApiKey


class ApiKeyStore(Protocol):
    """What a store of API keys implements. Keys are not a tenant's objects: these run as the operator (the
    ``keys`` command) or to find out who a caller is (the doors), across tenants."""

    async def create_key(self, tenant: str, *, expires_at: int | None = None) -> tuple[str, ApiKey]:
        """A new key for ``tenant``: the key's text (shown once, never stored) and its row."""
        ...

    async def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first, revoked and expired ones included."""
        ...

    async def revoke_key(self, key_id: str) -> bool:
        """Revoke the key with this id from now on; False when there is no such key (revoking twice keeps the
        first time)."""
        ...

    async def resolve_key(self, key: str) -> Resolved | None:
        """The row of a presented key whose secret matches; None for anything else (malformed, unknown id,
        wrong secret)."""
        ...


def mint(tenant: str, *, expires_at: int | None, now: int | None = None) -> tuple[str, StoredKey]:
    """A fresh key's text and the row to store for it."""
    key_id = secrets.token_hex(_ID_BYTES)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).rstrip(b"=").decode()
    salt = secrets.token_bytes(_SALT_BYTES)
    row = ApiKey(id=key_id, tenant=tenant, created_at=int(time.time()) if now is None else now,
                 expires_at=expires_at)
    return f"{KEY_PREFIX}{key_id}_{secret}", StoredKey(row, salt, _hash(salt, secret))


def parse(key: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None (nothing is looked up for a malformed one)."""
    match = _KEY_PATTERN.fullmatch(key)
    return (match.group(1), match.group(2)) if match else None


def matches(stored: StoredKey, secret: str) -> bool:
    return hmac.compare_digest(stored.secret_hash, _hash(stored.salt, secret))


def _hash(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()


_COLUMNS = "id, tenant, created_at, expires_at, revoked_at"


def key_from_row(row: Any) -> ApiKey:
    """An :class:`ApiKey` from a row of ``id, tenant, created_at, expires_at, revoked_at`` (either store)."""
    return ApiKey(id=str(row[0]), tenant=str(row[1]), created_at=int(row[2]),
                  expires_at=None if row[3] is None else int(row[3]),
                  revoked_at=None if row[4] is None else int(row[4]))


class SQLiteApiKeyStore:
    """:class:`ApiKeyStore` sharing a :class:`SQLiteResponseStore`'s connections (table ``api_keys``, migration 12)."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    async def create_key(self, tenant: str, *, expires_at: int | None = None) -> tuple[str, ApiKey]:
        text, stored = mint(tenant, expires_at=expires_at)
        row = stored.key
        async with self._db.writing() as conn:
            await conn.execute(
                "INSERT INTO api_keys (id, tenant, salt, secret_hash, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (row.id, row.tenant, stored.salt, stored.secret_hash, row.created_at, row.expires_at))
        return text, row

    async def list_keys(self) -> list[ApiKey]:
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id")
        return [key_from_row(tuple(row)) for row in rows]

    async def revoke_key(self, key_id: str) -> bool:
        async with self._db.writing() as conn:
            cursor = await conn.execute("UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                                        (int(time.time()), key_id))
            return cursor.rowcount > 0

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
        stored = StoredKey(key_from_row(row), bytes(row[5]), bytes(row[6]))
        return Resolved(stored.key) if matches(stored, secret) else None
