"""The stored event streams of background responses, and recovery of the runs a crash interrupted.

Events live in ``response_events`` (migration 3), one row per event, keyed by response id and sequence number;
the frame is kept exactly as it was sent (an SSE frame), so a replay is byte-for-byte what a live client got.
Writes go through the response store's one write connection and lock (see ``SQLiteResponseStore.writing``).
"""

from __future__ import annotations

import orjson

from .sqlite import SQLiteResponseStore

_APPEND = "INSERT OR IGNORE INTO response_events (response_id, sequence_number, event) VALUES (?, ?, ?)"
_AFTER = ("SELECT sequence_number, event FROM response_events WHERE response_id = ? AND sequence_number > ? "
          "ORDER BY sequence_number")
_UNFINISHED = "SELECT id, response FROM responses WHERE status IN ('queued', 'in_progress')"
_LAST = "SELECT coalesce(max(sequence_number), -1) FROM response_events WHERE response_id = ?"

INTERRUPTED_CODE = "server_restarted"
INTERRUPTED_MESSAGE = ("The server restarted before this background response completed; it was not finished and "
                       "will not be resumed.")


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

    async def end_response(self, response: dict, event_type: str) -> None:
        """Store ``response`` (already in its terminal status) and append its terminal event after the last
        stored one, in one transaction: a replay of its stream then ends."""
        response_id = response["id"]
        async with self._store.writing() as conn:
            last = next(iter(await conn.execute_fetchall(_LAST, (response_id,))))[0]
            event = {"type": event_type, "sequence_number": int(last) + 1, "response": response}
            frame = b"event: " + event_type.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await conn.execute("UPDATE responses SET status = ?, response = ? WHERE id = ?",
                                   (response.get("status"), orjson.dumps(response), response_id))
                await conn.execute(_APPEND, (response_id, int(last) + 1, frame))
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise

    async def fail_interrupted(self) -> list[str]:
        """Mark every response still ``queued``/``in_progress`` as failed, and end its event stream with
        ``response.failed``: called at startup, when no run of this process can be going on. Returns their ids."""
        async with self._store.reading() as conn:
            rows = list(await conn.execute_fetchall(_UNFINISHED))
        failed: list[str] = []
        for response_id, blob in rows:
            response = orjson.loads(blob)
            response["status"] = "failed"
            response["completed_at"] = None
            response["error"] = {"code": INTERRUPTED_CODE, "message": INTERRUPTED_MESSAGE}
            for item in response.get("output") or ():
                if isinstance(item, dict) and item.get("status") == "in_progress":
                    item["status"] = "incomplete"
            await self.end_response(response, "response.failed")
            failed.append(response_id)
        return failed

