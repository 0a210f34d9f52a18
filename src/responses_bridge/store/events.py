"""The stored event streams of background responses.

Events live in ``response_events`` (migration 3), one row per event, keyed by response id and sequence number;
the frame is kept exactly as it was sent (an SSE frame), so a replay is byte-for-byte what a live client got.
Writes go through the response store's one write connection and lock (see ``SQLiteResponseStore.writing``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from .sqlite import SQLiteResponseStore

_APPEND = "INSERT OR IGNORE INTO response_events (response_id, sequence_number, event) VALUES (?, ?, ?)"
_AFTER = ("SELECT sequence_number, event FROM response_events WHERE response_id = ? AND sequence_number > ? "
          "ORDER BY sequence_number")
_UNFINISHED = "SELECT response FROM responses WHERE status IN ('queued', 'in_progress')"
_LAST = "SELECT coalesce(max(sequence_number), -1) FROM response_events WHERE response_id = ?"


class SQLiteEventLog:
    def __init__(self, store: SQLiteResponseStore) -> None:
        self._store = store

    async def append(self, response_id: str, events: list[tuple[int, bytes]]) -> None:
        """Durable when it returns (one autocommit ``executemany``); replaying a sequence number is a no-op."""
        if not events:
            return
        rows = [(response_id, sequence, frame) for sequence, frame in events]
        async with self._store.writing() as conn:
            await conn.executemany(_APPEND, rows)

    async def after(self, response_id: str, after: int) -> list[tuple[int, bytes]]:
        async with self._store.reading() as conn:
            rows = await conn.execute_fetchall(_AFTER, (response_id, after))
        return [(int(sequence), bytes(frame)) for sequence, frame in rows]

    async def truncate(self, response_id: str, first: int) -> None:
        """Forget the events from sequence number ``first`` on (written for a terminal state that was never
        stored, about to be replaced)."""
        async with self._store.writing() as conn:
            await conn.execute("DELETE FROM response_events WHERE response_id = ? AND sequence_number >= ?",
                               (response_id, first))

    async def end_response(self, response: dict[str, Any], terminal_frame: Callable[[int], bytes]) -> None:
        """Store ``response`` (already in its terminal status) and append ``terminal_frame(n)`` after the last
        stored event, ``n`` being its sequence number, in one transaction: a replay of its stream then ends."""
        response_id = response["id"]
        async with self._store.writing() as conn:
            last = next(iter(await conn.execute_fetchall(_LAST, (response_id,))))[0]
            frame = terminal_frame(int(last) + 1)
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await conn.execute("UPDATE responses SET status = ?, response = ? WHERE id = ?",
                                   (response.get("status"), orjson.dumps(response), response_id))
                await conn.execute(_APPEND, (response_id, int(last) + 1, frame))
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise

    async def unfinished(self) -> list[dict[str, Any]]:
        """Every stored response still ``queued``/``in_progress``, as stored."""
        async with self._store.reading() as conn:
            rows = list(await conn.execute_fetchall(_UNFINISHED))
        return [orjson.loads(blob) for (blob,) in rows]
