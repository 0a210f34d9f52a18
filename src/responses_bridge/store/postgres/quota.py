"""The per-tenant quota lock on PostgreSQL: every check of a tenant's limits (``max_containers``, ``max_stored_bytes``)
runs under it, in the transaction that writes what the check allows, so the checks of one tenant run one after the
other across every replica sharing the database, while other tenants do not wait.

Why a lock and not the transaction alone: at READ COMMITTED (the stores' isolation) two transactions that count
the same rows and then insert both see the rows as they were before either insert, and both pass. Taken first,
the transaction-scoped advisory lock makes the second wait until the first has committed (PostgreSQL releases it
after the commit is visible), and the count it then runs, a new statement with a new snapshot, includes the
first one's row. The lock lives as long as the transaction: a crashed replica's lock is gone with its connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
