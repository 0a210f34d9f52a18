"""Values every replica must agree on, kept in the shared database (``shared_values``).

The first replica to ask stores its candidate; every other one (racing or later) reads the one stored: one
``INSERT … ON CONFLICT DO NOTHING`` then a read, so no two replicas ever use different values.
"""

from __future__ import annotations

from .database import PostgresDatabase

_OFFER = "INSERT INTO shared_values (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
_READ = "SELECT value FROM shared_values WHERE name = $1"


async def shared_value(db: PostgresDatabase, name: str, candidate: str) -> str:
    """The value stored under ``name``, storing ``candidate`` when there is none yet."""
    async with db.transaction("shared_value") as conn:
        await conn.execute(_OFFER, name, candidate)
        value = await conn.fetchval(_READ, name)
    return str(value)


__all__ = ["shared_value"]
