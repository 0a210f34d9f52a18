"""The stored event streams of background responses.

Events live in ``response_events`` (migration 3), one row per event, keyed by response id and sequence number;
the frame is kept exactly as it was sent (an SSE frame), so a replay is byte-for-byte what a live client got.
Writes go through the response store's one write connection and lock (see ``SQLiteResponseStore.writing``).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from typing import Any

import orjson

from ..records import LeaseLost
from .response_rows import check_lease
from .responses import SQLiteResponseStore
from .transactions import transaction

# A frame is appended unless its response row exists and is another tenant's. The row may not exist yet: the run's
# first frames are written while its ``queued`` row is being saved (and a batch may land after a delete).
_APPEND = ("INSERT OR IGNORE INTO response_events (response_id, sequence_number, event) SELECT ?, ?, ? "
           "WHERE NOT EXISTS (SELECT 1 FROM responses WHERE id = ? AND tenant <> ?)")
_OWNED = "response_id IN (SELECT id FROM responses WHERE id = :id AND tenant = :tenant)"
_AFTER = ("SELECT sequence_number, event FROM response_events WHERE response_id = :id AND sequence_number > :after "
          f"AND {_OWNED} ORDER BY sequence_number")
_TRUNCATE = f"DELETE FROM response_events WHERE response_id = :id AND sequence_number >= :first AND {_OWNED}"
_FORGET = f"DELETE FROM response_events WHERE response_id = :id AND sequence_number = :sequence AND {_OWNED}"
_UNFINISHED = "SELECT tenant, response FROM responses WHERE status IN ('queued', 'in_progress')"
_LAST = "SELECT coalesce(max(sequence_number), -1) FROM response_events WHERE response_id = ?"
_END = "UPDATE responses SET status = ?, response = ? WHERE id = ? AND tenant = ?"


class SQLiteEventLog:
    """:class:`~responses_bridge.store.base.EventLog` on the response store's database."""

    def __init__(self, store: SQLiteResponseStore) -> None:
        self._store = store

    async def append(self, response_id: str, events: list[tuple[int, bytes]], *, tenant: str,
                     lease_owner: str | None = None) -> None:
        """Durable when it returns (one autocommit ``executemany``); replaying a sequence number is a no-op. With
        ``lease_owner``, nothing is written unless that owner holds the run's lease (checked in the write's
        transaction): :class:`LeaseLost` then, never a quiet return, so a checkpoint that precedes an effectful
        call is known written before the call starts."""
        if not events:
            return
        rows = [(response_id, sequence, frame, response_id, tenant) for sequence, frame in events]
        if lease_owner is None:
            async with self._store.writing() as conn:
                await conn.executemany(_APPEND, rows)
            return

        def append(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                check_lease(conn, response_id, lease_owner)
                conn.executemany(_APPEND, rows)

        await self._store.run_write("append_events", append)

    async def after(self, response_id: str, after: int, *, tenant: str) -> list[tuple[int, bytes]]:
        async with self._store.reading() as conn:
            rows = await conn.execute_fetchall(_AFTER, {"id": response_id, "after": after, "tenant": tenant})
        return [(int(sequence), bytes(frame)) for sequence, frame in rows]

    async def truncate(self, response_id: str, first: int, *, tenant: str, lease_owner: str | None = None) -> None:
        """Forget the events from sequence number ``first`` on (written for a terminal state that was never
        stored, about to be replaced); with ``lease_owner``, only while it holds the run's lease."""

        def truncate(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                check_lease(conn, response_id, lease_owner)
                conn.execute(_TRUNCATE, {"id": response_id, "first": first, "tenant": tenant})

        await self._store.run_write("truncate_events", truncate)

    async def forget(self, response_id: str, sequence: int, *, tenant: str, lease_owner: str | None = None) -> None:
        """Erase the row at ``sequence``; with ``lease_owner``, only while it holds the run's lease."""

        def forget(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                try:
                    check_lease(conn, response_id, lease_owner)
                except LeaseLost:
                    return
                conn.execute(_FORGET, {"id": response_id, "sequence": sequence, "tenant": tenant})

        await self._store.run_write("forget_event", forget)

    async def end_response(self, response: dict[str, Any], terminal_frame: Callable[[int], bytes], *,
                           tenant: str, lease_owner: str | None = None) -> None:
        """Store ``response`` (already in its terminal status) and append ``terminal_frame(n)`` after the last
        stored event, ``n`` being its sequence number, in one transaction: a replay of its stream then ends.
        Nothing changes when the response is not ``tenant``'s (or gone); with ``lease_owner``, ``LeaseLost``
        unless that owner still holds the run's lease."""
        await self._store.run_write("end_response", functools.partial(
            _end_response, response=response, terminal_frame=terminal_frame, tenant=tenant,
            lease_owner=lease_owner))

    async def unfinished(self) -> list[tuple[str, dict[str, Any]]]:
        """Across tenants: workers only (start-up recovery). ``(tenant, response)`` of every stored response
        still ``queued``/``in_progress``, as stored."""
        async with self._store.reading() as conn:
            rows = list(await conn.execute_fetchall(_UNFINISHED))
        return [(str(tenant), orjson.loads(blob)) for tenant, blob in rows]


def end_rows(conn: sqlite3.Connection, *, response: dict[str, Any], terminal_frame: Callable[[int], bytes],
             tenant: str, lease_owner: str | None = None, drop_lease: bool = False) -> bool:
    """On the database thread, inside the caller's ``BEGIN IMMEDIATE`` transaction (so two processes never number a
    terminal frame alike): the terminal ``response`` and its frame, numbered after the last stored event; with
    ``drop_lease`` the run's lease row goes too (a sweep ending an abandoned run). False when the response is not
    ``tenant``'s (nothing changed)."""
    response_id = response["id"]
    check_lease(conn, response_id, lease_owner)
    owned = conn.execute(_END, (response.get("status"), orjson.dumps(response), response_id, tenant)).rowcount > 0
    if owned:
        last = int(conn.execute(_LAST, (response_id,)).fetchone()[0])
        conn.execute(_APPEND, (response_id, last + 1, terminal_frame(last + 1), response_id, tenant))
    if drop_lease:
        conn.execute("DELETE FROM background_runs WHERE response_id = ?", (response_id,))
    return owned


def _end_response(conn: sqlite3.Connection, **end: Any) -> bool:
    with transaction(conn):
        return end_rows(conn, **end)
