"""The bridge's API keys as every store keeps them: ``rbk_<id>_<secret>``, only a salted hash of the secret stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from typing import Any

from .records import ApiKey, StoredKey

KEY_PREFIX = "rbk_"


_ID_BYTES = 6


_SECRET_BYTES = 32


_SALT_BYTES = 16


_KEY_PATTERN = re.compile(r"rbk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


def mint(tenant: str, *, expires_at: int | None, now: int | None = None,
         operator: bool = False) -> tuple[str, StoredKey]:
    """A fresh key's text and the row to store for it."""
    key_id = secrets.token_hex(_ID_BYTES)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).rstrip(b"=").decode()
    salt = secrets.token_bytes(_SALT_BYTES)
    row = ApiKey(id=key_id, tenant=tenant, created_at=int(time.time()) if now is None else now,
                 expires_at=expires_at, operator=operator)
    return f"{KEY_PREFIX}{key_id}_{secret}", StoredKey(row, salt, _hash(salt, secret))


def parse(key: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None (nothing is looked up for a malformed one)."""
    match = _KEY_PATTERN.fullmatch(key)
    return (match.group(1), match.group(2)) if match else None


def matches(stored: StoredKey, secret: str) -> bool:
    return hmac.compare_digest(stored.secret_hash, _hash(stored.salt, secret))


def _hash(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()


_COLUMNS = "id, tenant, created_at, expires_at, revoked_at, operator"


def key_from_row(row: Any) -> ApiKey:
    """An :class:`ApiKey` from a row of ``id, tenant, created_at, expires_at, revoked_at, operator`` (either
    store)."""
    return ApiKey(id=str(row[0]), tenant=str(row[1]), created_at=int(row[2]),
                  expires_at=None if row[3] is None else int(row[3]),
                  revoked_at=None if row[4] is None else int(row[4]), operator=bool(row[5]))
