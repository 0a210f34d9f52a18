"""A tenant's stored bytes on SQLite, the one sum ``max_stored_bytes`` bounds: its live files (the Files API),
every file of its containers, its skills' versions and its containers' skills, counted alike by the check of an
upload (store/sqlite/files.py), of a container file (store/sqlite/containers.py) and of a skill
(store/sqlite/skills.py). Two budgets, one per kind, would let a tenant keep the limit twice
over.

A container's files count until the container is deleted or purged (their bytes are still kept, and the purge
runs every minute); an expired upload stops counting at its expiry, as it stops being readable.

Both checks run in the inserting ``BEGIN IMMEDIATE`` transaction: SQLite has one writer at a time, so a check and
its insert see every row another write committed before.
"""

from __future__ import annotations

import sqlite3

STORED_BYTES = ("SELECT (SELECT coalesce(sum(bytes), 0) FROM files WHERE tenant = :tenant "
                "AND (expires_at IS NULL OR expires_at > :now)) + "
                "(SELECT coalesce(sum(f.bytes), 0) FROM container_files AS f JOIN containers AS c "
                "ON c.id = f.container_id WHERE c.tenant = :tenant) + "
                "(SELECT coalesce(sum(v.bytes), 0) FROM skill_versions AS v JOIN skills AS s "
                "ON s.id = v.skill_id WHERE s.tenant = :tenant) + "
                "(SELECT coalesce(sum(k.bytes), 0) FROM container_skills AS k JOIN containers AS c "
                "ON c.id = k.container_id WHERE c.tenant = :tenant)")
"""The tenant's stored bytes at ``:now`` (parameters ``tenant``, ``now``)."""


def stored_bytes(conn: sqlite3.Connection, tenant: str, now: int) -> int:
    """The tenant's stored bytes at ``now``, read on the database thread (inside the caller's transaction)."""
    return int(conn.execute(STORED_BYTES, {"tenant": tenant, "now": now}).fetchone()[0])
