"""The event log of background responses on PostgreSQL: what lets a stream be replayed (and followed) from any
replica, since every replica reads the same rows.

Events are children of their response: every statement reaching them by response id checks, in the same
statement, that the response is the tenant's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ..records import LeaseLost
from .database import PostgresDatabase
from .sql import check_lease

_OWNED = "(SELECT id FROM responses WHERE id = $1 AND tenant = $2)"
_APPEND = f"""
INSERT INTO response_events (response_id, sequence_number, event)
SELECT $1, sequence_number, event FROM unnest($3::integer[], $4::bytea[]) AS u (sequence_number, event)
WHERE EXISTS {_OWNED}
ON CONFLICT (response_id, sequence_number) DO NOTHING
"""
_AFTER = f"""
SELECT sequence_number, event FROM response_events
WHERE response_id = $1 AND response_id IN {_OWNED} AND sequence_number > $3 ORDER BY sequence_number
"""
_TRUNCATE = f"DELETE FROM response_events WHERE response_id = $1 AND response_id IN {_OWNED} AND sequence_number >= $3"
_FORGET = f"DELETE FROM response_events WHERE response_id = $1 AND response_id IN {_OWNED} AND sequence_number = $3"
_LOCK = "SELECT 1 FROM responses WHERE id = $1 AND tenant = $2 FOR UPDATE"
_LOCK_SHARED = "SELECT 1 FROM responses WHERE id = $1 AND tenant = $2 FOR SHARE"
_LAST = "SELECT coalesce(max(sequence_number), -1) FROM response_events WHERE response_id = $1"
_END = "UPDATE responses SET status = $3, response = $4 WHERE id = $1 AND tenant = $2"
_INSERT_ONE = ("INSERT INTO response_events (response_id, sequence_number, event) VALUES ($1, $2, $3) "
               "ON CONFLICT (response_id, sequence_number) DO NOTHING")
_UNFINISHED = "SELECT tenant, response FROM responses WHERE status IN ('queued', 'in_progress')"


class PostgresEventLog:
    """:class:`~responses_bridge.store.base.EventLog` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def append(self, response_id: str, events: list[tuple[int, bytes]], *, tenant: str,
                     lease_owner: str | None = None) -> None:
        """Durable when it returns (one statement); a sequence number already stored is kept. With
        ``lease_owner``, the response row is locked first (shared: a sweep's ``SKIP LOCKED`` passes it by) and
        nothing is written unless that owner still holds the run's lease: else :class:`LeaseLost`, never a quiet
        return — a checkpoint that precedes an effectful call must not look written when it was not."""
        if not events:
            return
        async with self._db.transaction("append_events") as conn:
            if lease_owner is not None:
                if await conn.fetchval(_LOCK_SHARED, response_id, tenant) is None:
                    return
                await check_lease(conn, response_id, lease_owner)
            await conn.execute(_APPEND, response_id, tenant, [sequence for sequence, _ in events],
                               [frame for _, frame in events])

    async def after(self, response_id: str, after: int, *, tenant: str) -> list[tuple[int, bytes]]:
        async with self._db.acquire("events_after") as conn:
            rows = await conn.fetch(_AFTER, response_id, tenant, after)
        return [(int(row[0]), bytes(row[1])) for row in rows]

    async def truncate(self, response_id: str, first: int, *, tenant: str, lease_owner: str | None = None) -> None:
        async with self._db.transaction("truncate_events") as conn:
            if lease_owner is not None:
                if await conn.fetchval(_LOCK, response_id, tenant) is None:
                    return
                await check_lease(conn, response_id, lease_owner)
            await conn.execute(_TRUNCATE, response_id, tenant, first)

    async def forget(self, response_id: str, sequence: int, *, tenant: str, lease_owner: str | None = None) -> None:
        """Erase the row at ``sequence``; with ``lease_owner``, only while it holds the run's lease."""
        async with self._db.transaction("forget_event") as conn:
            if lease_owner is not None:
                if await conn.fetchval(_LOCK_SHARED, response_id, tenant) is None:
                    return
                try:
                    await check_lease(conn, response_id, lease_owner)
                except LeaseLost:
                    return
            await conn.execute(_FORGET, response_id, tenant, sequence)

    async def end_response(self, response: dict[str, Any], terminal_frame: Callable[[int], bytes], *,
                           tenant: str, lease_owner: str | None = None) -> None:
        """Store the terminal response and append its terminal frame after the last event, in one transaction;
        the response row's lock keeps two replicas from numbering a terminal frame alike (and, with
        ``lease_owner``, a sweep from ending the run between the fence and the write)."""
        response_id = response["id"]
        async with self._db.transaction("end_response") as conn:
            if await conn.fetchval(_LOCK, response_id, tenant) is None:
                return
            await check_lease(conn, response_id, lease_owner)
            last = int(await conn.fetchval(_LAST, response_id))
            await conn.execute(_END, response_id, tenant, response.get("status"), orjson.dumps(response))
            await conn.execute(_INSERT_ONE, response_id, last + 1, terminal_frame(last + 1))

    async def unfinished(self) -> list[tuple[str, dict[str, Any]]]:
        """Across tenants: workers only (start-up recovery). ``(tenant, response)`` of every stored response
        still ``queued``/``in_progress``."""
        async with self._db.acquire("unfinished") as conn:
            rows = await conn.fetch(_UNFINISHED)
        return [(row[0], orjson.loads(row[1])) for row in rows]


__all__ = ["PostgresEventLog"]
