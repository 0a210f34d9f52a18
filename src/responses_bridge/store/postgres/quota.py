"""The per-tenant quota lock on PostgreSQL: every check of a tenant's limits (``max_containers``, ``max_stored_bytes``)
runs under it, in the transaction that writes what the check allows, so the checks of one tenant run one after the other
across every replica sharing the database, while other tenants do not wait. And the tenant's stored bytes, the one sum
``max_stored_bytes`` bounds: its live files, every file of its containers, its skills' versions, its containers'
skills, the parts of its uploads under way (each at the blocks it occupies: store/base_uploads.py) and what their
completions' claims count, summed alike by the check of a
file (store/postgres/files/files.py), of a container file (store/postgres/containers/containers.py), of a skill
(store/postgres/containers/skills.py) and of an upload's part or completion (store/postgres/files/uploads.py) under the
same lock; two budgets, one per kind, would let a tenant keep the limit twice over. A container's files count until the
container is deleted or purged (their bytes are still kept); an expired file stops counting at its expiry, an
upload's parts and its claim when the upload ends (completed, cancelled, or expired and purged) or its completion lets
go.

Why a lock and not the transaction alone: at READ COMMITTED (the stores' isolation) two transactions that count
the same rows and then insert both see the rows as they were before either insert, and both pass. Taken first,
the transaction-scoped advisory lock makes the second wait until the first has committed (PostgreSQL releases it
after the commit is visible), and the count it then runs, a new statement with a new snapshot, includes the
first one's row. The lock lives as long as the transaction: a crashed replica's lock is gone with its connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base_uploads import CHARGED_PART_BYTES
from ..records import StorageLimitExceeded

if TYPE_CHECKING:
    from .migrations import Connection

QUOTA_LOCK = 0x6669_6C65
"""The first key of ``pg_advisory_xact_lock(int, int)``, the second being the tenant's ``hashtext``; the two-key
space never meets the one-key locks (the migration lock). Its value is the files' lock of earlier versions
("file"), so during a rolling upgrade their uploads and this version's writes still take turns. Two tenants whose
names hash alike share a lock: they wait for each other's checks, and nothing more."""


async def lock_tenant_quota(conn: Connection, tenant: str) -> None:
    """Take ``tenant``'s quota lock for the rest of ``conn``'s transaction (waiting for whoever holds it)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", QUOTA_LOCK, tenant)


AGENT_BYTES = ("(SELECT coalesce(sum(bytes), 0) FROM agent_records WHERE tenant = $2) + "
               "(SELECT coalesce(sum(bytes), 0) FROM agent_automation_versions WHERE tenant = $2) + "
               "(SELECT coalesce(sum(packages_bytes), 0) FROM containers WHERE tenant = $2)")
"""What the Agents API keeps of the tenant's, as on SQLite (store/sqlite/files/quota.py's AGENT_BYTES)."""

STORED_BYTES = ("SELECT (SELECT coalesce(sum(bytes), 0) FROM files WHERE tenant = $2 "
                "AND (expires_at IS NULL OR expires_at > $1)) + "
                "(SELECT coalesce(sum(f.bytes), 0) FROM container_files AS f JOIN containers AS c "
                "ON c.id = f.container_id WHERE c.tenant = $2) + "
                "(SELECT coalesce(sum(v.bytes), 0) FROM skill_versions AS v JOIN skills AS s "
                "ON s.id = v.skill_id WHERE s.tenant = $2) + "
                "(SELECT coalesce(sum(k.bytes), 0) FROM container_skills AS k JOIN containers AS c "
                "ON c.id = k.container_id WHERE c.tenant = $2) + "
                f"(SELECT coalesce(sum({CHARGED_PART_BYTES.format(column='p.bytes')}), 0) FROM upload_parts AS p "
                "JOIN uploads AS u "
                "ON u.id = p.upload_id WHERE u.tenant = $2) + "
                "(SELECT coalesce(sum(completing_bytes), 0) FROM uploads WHERE tenant = $2 AND status = 'pending') + "
                f"{AGENT_BYTES}")
"""The tenant's stored bytes at a time (``$1``: now, ``$2``: the tenant)."""


async def stored_bytes(conn: Connection, tenant: str, now: int) -> int:
    """The tenant's stored bytes at ``now``: under :func:`lock_tenant_quota`, every write checked before counts."""
    return int(await conn.fetchval(STORED_BYTES, now, tenant))


async def check_stored_bytes(conn: Connection, tenant: str, now: int, adding: int, limit: int | None) -> None:
    """:class:`StorageLimitExceeded` when ``adding`` more bytes would pass the tenant's ``limit`` (None: no limit),
    checked under the tenant's quota lock, taken here for the rest of the caller's transaction."""
    if limit is not None:
        await lock_tenant_quota(conn, tenant)
        used = await stored_bytes(conn, tenant, now)
        if used + adding > limit:
            raise StorageLimitExceeded(limit, used)
