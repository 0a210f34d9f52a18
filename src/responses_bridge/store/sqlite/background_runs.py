"""Who runs each background response: the seam between the background service and a store.

A background response is run by one process. When that process is the only one using the SQLite file (one
worker), at start every run still ``queued``/``in_progress`` belongs to a process that died, and nothing else can
be running one: :class:`LocalRunLeases`. When several processes share a database (``serve --workers N`` on one
SQLite file, or PostgreSQL replicas), each running background response is *owned* by one process through a lease
(owner id + expiry, renewed by the owner's heartbeat): a process fails only runs whose lease expired, a follower
in another process reads the event log as it grows, and a cancel asked of another process is recorded for the
owner to act on. :class:`SQLiteRunLeases` is that on one SQLite file; SQLite has no notifications, so a small
poller (every ``POLL_SECONDS``, and only while there is something to look for) reads the cancel requests of this
process's runs and the growth of the event logs someone here follows.

:class:`RunLeases` (store/base.py) is what the background service asks of a store for this.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from ..base import EventLog
from ..owners import new_owner_id
from ..records import Closer, Renewal
from ..watchers import Watchers
from .events import end_rows
from .transactions import transaction

if TYPE_CHECKING:
    from .responses import SQLiteResponseStore

log = structlog.get_logger("responses_bridge.background")

POLL_SECONDS = 0.1
"""How often a worker looks for cancel requests of its runs and new events of the runs it follows: a cancel or
an event from another worker arrives within about this long."""
SWEEP_BATCH = 100


class LocalRunLeases:
    """One process on its own database (SQLite): no lease to hold, every unfinished run is this process's.

    ``fail_abandoned`` at start fails every unfinished run (none can be running yet); later sweeps find none,
    since every run this process starts is in its memory until it ends."""

    def __init__(self, events: EventLog) -> None:
        self._events = events
        self._swept = False
        self._watchers = Watchers()

    owner: str | None = None  # no lease, no fence: the saves of this process's runs are not checked

    @property
    def shared(self) -> bool:
        return False

    @property
    def lease_seconds(self) -> float:
        return 0.0

    async def start(self, on_cancel: Callable[[str], None]) -> None:
        return None

    async def close(self) -> None:
        return None

    async def claim(self, response_id: str) -> None:
        return None

    async def renew(self, response_ids: list[str]) -> Renewal:
        return Renewal()

    async def release(self, response_id: str) -> None:
        self._watchers.wake(response_id)

    async def fail_abandoned(self, close: Closer) -> list[str]:
        if self._swept:
            return []
        self._swept = True
        failed: list[str] = []
        for tenant, stored in await self._events.unfinished():
            response, frame = close(stored)
            await self._events.end_response(response, frame, tenant=tenant)
            failed.append(response["id"])
        return failed

    async def take_abandoned(self) -> list[tuple[str, str, dict[str, Any]]]:
        """At start, every unfinished run is a dead process's (none can be running yet); never again after."""
        if self._swept:
            return []
        self._swept = True
        return [(str(stored.get("id")), tenant, stored) for tenant, stored in await self._events.unfinished()]

    async def close_abandoned(self, response_id: str, close: Closer, *, tenant: str) -> dict[str, Any] | None:
        """Only asked about a run this process does not have in memory, after the caller read it as ``tenant``'s:
        abandoned if unfinished."""
        for owner, stored in await self._events.unfinished():
            if stored.get("id") == response_id and owner == tenant:
                response, frame = close(stored)
                await self._events.end_response(response, frame, tenant=tenant)
                return response
        return None

    async def request_cancel(self, response_id: str, *, tenant: str) -> bool:
        return False

    def watch(self, response_id: str) -> AbstractAsyncContextManager[asyncio.Event]:
        return self._watchers.watch(response_id)


_CLAIM = ("INSERT OR REPLACE INTO background_runs (response_id, owner, lease_until, cancel_requested) "
          "VALUES (?, ?, ?, 0)")
_RELEASE = "DELETE FROM background_runs WHERE response_id = ? AND owner = ?"
_HELD_BY = "SELECT response_id, cancel_requested FROM background_runs WHERE owner = ? AND response_id IN ({})"
_RENEW = "UPDATE background_runs SET lease_until = ? WHERE owner = ? AND response_id IN ({})"
_CANCELS = "SELECT response_id FROM background_runs WHERE owner = ? AND cancel_requested = 1"
_ASK_CANCEL = ("UPDATE background_runs SET cancel_requested = 1 WHERE response_id = ? AND lease_until > ? "
               "AND response_id IN (SELECT id FROM responses WHERE id = ? AND tenant = ?)")
# unfinished responses nobody holds: no lease row, or one that ran out
_ABANDONED = ("SELECT r.id, r.tenant, r.response FROM responses r WHERE r.status IN ('queued', 'in_progress') "
              "AND NOT EXISTS (SELECT 1 FROM background_runs b WHERE b.response_id = r.id AND b.lease_until > ?)")
_LOG_ENDS = "SELECT response_id, max(sequence_number) FROM response_events WHERE response_id IN ({}) GROUP BY 1"
_STATUSES = "SELECT id, status FROM responses WHERE id IN ({})"


def _marks(count: int) -> str:
    return ", ".join("?" * count)


class SQLiteRunLeases:
    """:class:`~responses_bridge.store.base.RunLeases` for several worker processes on one SQLite file.

    Every write is one ``BEGIN IMMEDIATE`` transaction on the store's write connection: SQLite's file lock orders
    them across processes, so a sweep and an owner's fenced save never interleave, and two workers sweeping at
    once end each abandoned run once (the second finds it ended)."""

    def __init__(self, store: SQLiteResponseStore, *, lease_seconds: float = 30.0, owner: str | None = None,
                 poll_seconds: float = POLL_SECONDS) -> None:
        self._store = store
        self._lease_seconds = lease_seconds
        self.owner: str | None = owner or new_owner_id()
        self._poll_seconds = poll_seconds
        self._watchers = Watchers()
        self._held: set[str] = set()  # claimed here and not released
        self._log_ends: dict[str, tuple[int, str]] = {}  # watched id -> (last sequence, status) last seen
        self._on_cancel: Callable[[str], None] | None = None
        self._poller: asyncio.Task[None] | None = None

    @property
    def shared(self) -> bool:
        return True

    @property
    def lease_seconds(self) -> float:
        return self._lease_seconds

    async def start(self, on_cancel: Callable[[str], None]) -> None:
        self._on_cancel = on_cancel
        self._poller = asyncio.create_task(self._poll(), name="background:poll")

    async def close(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.wait([poller])

    # --- the poller: what PostgreSQL's notifications do ---------------------------------------------------------

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                if self._held and self._on_cancel is not None:
                    async with self._store.reading() as conn:
                        rows = await conn.execute_fetchall(_CANCELS, (self.owner,))
                    for (response_id,) in rows:
                        if response_id in self._held:
                            self._on_cancel(str(response_id))
                if self._watchers.by_response:
                    await self._look_at_logs(list(self._watchers.by_response))
            except Exception:  # the store is away for a moment: the next poll (or the follower's own) retries
                log.debug("background_poll_failed", exc_info=True)

    async def _look_at_logs(self, watched: list[str]) -> None:
        """Wake the followers of each log that grew or whose response changed status since the last poll."""
        async with self._store.reading() as conn:
            ends = {str(row[0]): row[1] for row in await conn.execute_fetchall(
                _LOG_ENDS.format(_marks(len(watched))), watched)}
            statuses = {str(row[0]): row[1] for row in await conn.execute_fetchall(
                _STATUSES.format(_marks(len(watched))), watched)}
        for gone in set(self._log_ends) - set(watched):
            del self._log_ends[gone]
        for response_id in watched:
            seen = (int(ends.get(response_id, -1)), str(statuses.get(response_id)))
            if self._log_ends.get(response_id) != seen:
                self._log_ends[response_id] = seen
                self._watchers.wake(response_id)

    def watch(self, response_id: str) -> AbstractAsyncContextManager[asyncio.Event]:
        return self._watchers.watch(response_id)

    # --- leases ------------------------------------------------------------------------------------------------

    def _until(self) -> float:
        return time.time() + self._lease_seconds

    async def claim(self, response_id: str) -> None:
        async with self._store.writing() as conn:
            await conn.execute(_CLAIM, (response_id, self.owner, self._until()))
        self._held.add(response_id)

    async def renew(self, response_ids: list[str]) -> Renewal:
        if not response_ids:
            return Renewal()
        marks = _marks(len(response_ids))

        def renew(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            with transaction(conn):
                conn.execute(_RENEW.format(marks), (self._until(), self.owner, *response_ids))
                return conn.execute(_HELD_BY.format(marks), (self.owner, *response_ids)).fetchall()

        rows = await self._store.run_write("background_renew", renew)
        held = {str(response_id) for response_id, _ in rows}
        return Renewal(lost=frozenset(set(response_ids) - held),
                       cancel_requested=frozenset(str(response_id) for response_id, asked in rows if asked))

    async def release(self, response_id: str) -> None:
        self._held.discard(response_id)
        async with self._store.writing() as conn:
            await conn.execute(_RELEASE, (response_id, self.owner))
        self._watchers.wake(response_id)

    async def fail_abandoned(self, close: Closer) -> list[str]:
        ended: list[str] = []
        while True:
            batch = await self._store.run_write("background_sweep", functools.partial(
                _sweep, close=close, limit=SWEEP_BATCH, now=time.time()))
            ended.extend(batch)
            if len(batch) < SWEEP_BATCH:
                return ended

    async def take_abandoned(self) -> list[tuple[str, str, dict[str, Any]]]:
        taken = await self._store.run_write("background_take", functools.partial(
            _take, owner=self.owner, until=self._until(), limit=SWEEP_BATCH, now=time.time()))
        self._held.update(response_id for response_id, _, _ in taken)
        return taken

    async def close_abandoned(self, response_id: str, close: Closer, *, tenant: str) -> dict[str, Any] | None:
        return await self._store.run_write("background_sweep", functools.partial(
            _sweep_one, response_id=response_id, tenant=tenant, close=close, now=time.time()))

    async def request_cancel(self, response_id: str, *, tenant: str) -> bool:
        async with self._store.writing() as conn, conn.execute(
                _ASK_CANCEL, (response_id, time.time(), response_id, tenant)) as cursor:
            return cursor.rowcount > 0


def _sweep(conn: sqlite3.Connection, *, close: Closer, limit: int, now: float) -> list[str]:
    """On the database thread, in one transaction: end up to ``limit`` runs nobody holds."""
    ended: list[str] = []
    with transaction(conn):
        for response_id, tenant, blob in conn.execute(_ABANDONED + " ORDER BY r.id LIMIT ?", (now, limit)).fetchall():
            _end_abandoned(conn, str(tenant), blob, close)
            ended.append(str(response_id))
    return ended


def _take(conn: sqlite3.Connection, *, owner: str | None, until: float, limit: int,
          now: float) -> list[tuple[str, str, dict[str, Any]]]:
    """On the database thread, in one transaction (SQLite's file lock orders it against every other worker's):
    lease up to ``limit`` runs nobody holds to ``owner``. A second worker taking at once finds them held."""
    taken: list[tuple[str, str, dict[str, Any]]] = []
    with transaction(conn):
        for response_id, tenant, blob in conn.execute(_ABANDONED + " ORDER BY r.id LIMIT ?", (now, limit)).fetchall():
            conn.execute(_CLAIM, (response_id, owner, until))
            taken.append((str(response_id), str(tenant), orjson.loads(blob)))
    return taken


def _sweep_one(conn: sqlite3.Connection, *, response_id: str, tenant: str, close: Closer,
               now: float) -> dict[str, Any] | None:
    with transaction(conn):
        row = conn.execute(_ABANDONED + " AND r.id = ? AND r.tenant = ?", (now, response_id, tenant)).fetchone()
        if row is None:
            return None
        return _end_abandoned(conn, tenant, row[2], close)


def _end_abandoned(conn: sqlite3.Connection, tenant: str, blob: bytes, close: Closer) -> dict[str, Any]:
    """Inside the sweep's transaction: the terminal response, its frame after the last stored event, and no lease
    row any more (so the run's owner, should it come back, finds its saves fenced off)."""
    response, frame = close(orjson.loads(blob))
    end_rows(conn, response=response, terminal_frame=frame, tenant=tenant, drop_lease=True)
    return response
