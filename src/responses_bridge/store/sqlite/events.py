"""The stored event streams of background responses.

Events live in ``response_events`` (migration 3), one row per event, keyed by response id and sequence number;
the frame is kept exactly as it was sent (an SSE frame), so a replay is byte-for-byte what a live client got.
Writes go through the response store's one write connection and lock (see ``SQLiteResponseStore.writing``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from .responses import SQLiteResponseStore

# A frame is appended unless its response row exists and is another tenant's. The row may not exist yet: the run's
# first frames are written while its ``queued`` row is being saved (and a batch may land after a delete).
_APPEND = ("INSERT OR IGNORE INTO response_events (response_id, sequence_number, event) SELECT ?, ?, ? "
           "WHERE NOT EXISTS (SELECT 1 FROM responses WHERE id = ? AND tenant <> ?)")
_OWNED = "response_id IN (SELECT id FROM responses WHERE id = :id AND tenant = :tenant)"
_AFTER = ("SELECT sequence_number, event FROM response_events WHERE response_id = :id AND sequence_number > :after "
          f"AND {_OWNED} ORDER BY sequence_number")
_TRUNCATE = f"DELETE FROM response_events WHERE response_id = :id AND sequence_number >= :first AND {_OWNED}"
_UNFINISHED = "SELECT tenant, response FROM responses WHERE status IN ('queued', 'in_progress')"
_LAST = "SELECT coalesce(max(sequence_number), -1) FROM response_events WHERE response_id = ?"
_END = "UPDATE responses SET status = ?, response = ? WHERE id = ? AND tenant = ?"


class SQLiteEventLog:
    """:class:`~responses_bridge.store.base.EventLog` on the response store's database."""

    def __init__(self, store: SQLiteResponseStore) -> None:
        self._store = store

    async def append(self, response_id: str, events: list[tuple[int, bytes]], *, tenant: str) -> None:
        """Durable when it returns (one autocommit ``executemany``); replaying a sequence number is a no-op."""
        if not events:
            return
        rows = [(response_id, sequence, frame, response_id, tenant) for sequence, frame in events]
        async with self._store.writing() as conn:
            await conn.executemany(_APPEND, rows)

    async def after(self, response_id: str, after: int, *, tenant: str) -> list[tuple[int, bytes]]:
        async with self._store.reading() as conn:
            rows = await conn.execute_fetchall(_AFTER, {"id": response_id, "after": after, "tenant": tenant})
        return [(int(sequence), bytes(frame)) for sequence, frame in rows]

    async def truncate(self, response_id: str, first: int, *, tenant: str) -> None:
        """Forget the events from sequence number ``first`` on (written for a terminal state that was never
        stored, about to be replaced)."""
        async with self._store.writing() as conn:
            await conn.execute(_TRUNCATE, {"id": response_id, "first": first, "tenant": tenant})

    async def end_response(self, response: dict[str, Any], terminal_frame: Callable[[int], bytes], *,
                           tenant: str) -> None:
        """Store ``response`` (already in its terminal status) and append ``terminal_frame(n)`` after the last
        stored event, ``n`` being its sequence number, in one transaction: a replay of its stream then ends.
        Nothing changes when the response is not ``tenant``'s (or gone)."""
        response_id = response["id"]
        async with self._store.writing() as conn:
            last = next(iter(await conn.execute_fetchall(_LAST, (response_id,))))[0]
            frame = terminal_frame(int(last) + 1)
            await conn.execute("BEGIN IMMEDIATE")
            try:
                async with conn.execute(_END, (response.get("status"), orjson.dumps(response), response_id,
                                               tenant)) as cursor:
                    owned = cursor.rowcount > 0
                if owned:
                    await conn.execute(_APPEND, (response_id, int(last) + 1, frame, response_id, tenant))
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise

    async def unfinished(self) -> list[tuple[str, dict[str, Any]]]:
        """Across tenants: workers only (start-up recovery). ``(tenant, response)`` of every stored response
        still ``queued``/``in_progress``, as stored."""
        async with self._store.reading() as conn:
            rows = list(await conn.execute_fetchall(_UNFINISHED))
        return [(str(tenant), orjson.loads(blob)) for tenant, blob in rows]
