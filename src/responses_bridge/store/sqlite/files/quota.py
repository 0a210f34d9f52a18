"""A tenant's stored bytes on SQLite, the one sum ``max_stored_bytes`` bounds: its live files (the Files API),
every file of its containers, its skills' versions, its containers' skills, the parts of its uploads under way (each
at the blocks it occupies: store/base_uploads.py) and what their completions' claims count, counted alike by the
check of a file (files.py), of a container file (store/sqlite/containers/containers.py), of a skill
(store/sqlite/containers/skills.py) and of an upload's part or completion (uploads.py). Two budgets,
one per kind, would let a tenant keep the limit twice over.

A container's files count until the container is deleted or purged (their bytes are still kept, and the purge
runs every minute); an expired file stops counting at its expiry, as it stops being readable;
an upload's parts and its claim when the upload ends (completed, cancelled, or expired and purged) or its completion
lets go.

Both checks run in the inserting ``BEGIN IMMEDIATE`` transaction: SQLite has one writer at a time, so a check and
its insert see every row another write committed before.
"""

from __future__ import annotations

import sqlite3

from ...base_uploads import CHARGED_PART_BYTES
from ...records import StorageLimitExceeded

AGENT_BYTES = ("(SELECT coalesce(sum(bytes), 0) FROM agent_records WHERE tenant = :tenant) + "
               "(SELECT coalesce(sum(bytes), 0) FROM agent_automation_versions WHERE tenant = :tenant) + "
               "(SELECT coalesce(sum(packages_bytes), 0) FROM containers WHERE tenant = :tenant)")
"""What the Agents API keeps of the tenant's: its records (sessions, turns, items, artifacts with the bytes they
keep, environments, templates, automations, invocations) and its automations' versions, each at its ``bytes``
(summed through an index holding it), and its containers' installed packages."""

STORED_BYTES = ("SELECT (SELECT coalesce(sum(bytes), 0) FROM files WHERE tenant = :tenant "
                "AND (expires_at IS NULL OR expires_at > :now)) + "
                "(SELECT coalesce(sum(f.bytes), 0) FROM container_files AS f JOIN containers AS c "
                "ON c.id = f.container_id WHERE c.tenant = :tenant) + "
                "(SELECT coalesce(sum(v.bytes), 0) FROM skill_versions AS v JOIN skills AS s "
                "ON s.id = v.skill_id WHERE s.tenant = :tenant) + "
                "(SELECT coalesce(sum(k.bytes), 0) FROM container_skills AS k JOIN containers AS c "
                "ON c.id = k.container_id WHERE c.tenant = :tenant) + "
                f"(SELECT coalesce(sum({CHARGED_PART_BYTES.format(column='p.bytes')}), 0) FROM upload_parts AS p "
                "JOIN uploads AS u "
                "ON u.id = p.upload_id WHERE u.tenant = :tenant) + "
                "(SELECT coalesce(sum(completing_bytes), 0) FROM uploads WHERE tenant = :tenant "
                "AND status = 'pending') + "
                f"{AGENT_BYTES}")
"""The tenant's stored bytes at ``:now`` (parameters ``tenant``, ``now``)."""


def stored_bytes(conn: sqlite3.Connection, tenant: str, now: int) -> int:
    """The tenant's stored bytes at ``now``, read on the database thread (inside the caller's transaction)."""
    return int(conn.execute(STORED_BYTES, {"tenant": tenant, "now": now}).fetchone()[0])


def check_stored_bytes(conn: sqlite3.Connection, tenant: str, now: int, adding: int, limit: int | None) -> None:
    """:class:`StorageLimitExceeded` when ``adding`` more bytes would pass the tenant's ``limit`` (None: no limit),
    checked inside the caller's write transaction."""
    if limit is not None:
        used = stored_bytes(conn, tenant, now)
        if used + adding > limit:
            raise StorageLimitExceeded(limit, used)
