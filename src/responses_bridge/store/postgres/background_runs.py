"""Background responses across replicas on one PostgreSQL database (``RunLeases``; see store/base.py: RunLeases).

Each running background response has a row in ``background_runs``: the replica that owns it and until when
(``lease_until``, database time, so replicas' clocks do not matter), renewed by the owner's heartbeat, and whether
someone asked to cancel it. A replica ends only runs whose lease expired (or that have none: a replica that died
before its claim was stored never made the row), claiming each with ``FOR UPDATE SKIP LOCKED`` on the response row,
so two replicas sweeping at once never both end one run: the terminal event is written once.

The table and the trigger are migration 9 of the PostgreSQL list (migrations.py).

Notifications (``LISTEN``/``NOTIFY`` on one dedicated connection per replica, asyncpg's ``add_listener``):

- ``responses_bridge_events``: a trigger on ``response_events`` sends the response id with every insert (PostgreSQL
  folds identical notifications of one transaction into one, so a batch of events is one notification), and
  :meth:`PostgresRunLeases.release` sends one when a run's terminal state is stored. Followers on other replicas
  wake on it; they also read the log every second, in case the listening connection was lost.
- ``responses_bridge_cancel``: a cancel request, for the owner to stop its run at once (the heartbeat, which
  reads ``cancel_requested``, is the fallback).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
import structlog

from ..owners import new_owner_id
from ..records import Closer, Renewal
from ..watchers import Watchers
from .database import PostgresDatabase

if TYPE_CHECKING:
    from .migrations import Connection

log = structlog.get_logger("responses_bridge.store.background_runs")

EVENTS_CHANNEL = "responses_bridge_events"
CANCEL_CHANNEL = "responses_bridge_cancel"
SWEEP_BATCH = 100  # abandoned runs ended per transaction (a short lock on each row)
LISTEN_CONNECT_TIMEOUT = 10.0

_CLAIM = ("INSERT INTO background_runs (response_id, owner, lease_until) "
          "VALUES ($1, $2, now() + $3 * interval '1 second') "
          "ON CONFLICT (response_id) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until, "
          "cancel_requested = false")
# a lease that ran out is not renewed, even when nobody took it yet: the run's writes are fenced off from that
# moment (sql.check_lease), so its owner must stop it too
_RENEW = ("UPDATE background_runs SET lease_until = now() + $3 * interval '1 second' "
          "WHERE owner = $1 AND response_id = ANY($2::text[]) AND lease_until > now() "
          "RETURNING response_id, cancel_requested")
_RELEASE = "DELETE FROM background_runs WHERE response_id = $1 AND owner = $2"
_NOTIFY = "SELECT pg_notify($1, $2)"
# unfinished responses nobody holds: no lease row, or one that ran out
_ABANDONED = ("SELECT r.id, r.response FROM responses r WHERE r.status IN ('queued', 'in_progress') "
              "AND NOT EXISTS (SELECT 1 FROM background_runs b WHERE b.response_id = r.id AND b.lease_until > now())")
_SWEEP = _ABANDONED + " ORDER BY r.id LIMIT $1 FOR UPDATE OF r SKIP LOCKED"
_TAKE = ("SELECT r.id, r.tenant, r.response FROM responses r WHERE r.status IN ('queued', 'in_progress') "
         "AND NOT EXISTS (SELECT 1 FROM background_runs b WHERE b.response_id = r.id AND b.lease_until > now()) "
         "ORDER BY r.id LIMIT $1 FOR UPDATE OF r SKIP LOCKED")
_ONE = _ABANDONED + " AND r.id = $1 AND r.tenant = $2 FOR UPDATE OF r SKIP LOCKED"
_LAST = "SELECT coalesce(max(sequence_number), -1) FROM response_events WHERE response_id = $1"
_END = "UPDATE responses SET status = $2, response = $3 WHERE id = $1"
_TERMINAL_EVENT = ("INSERT INTO response_events (response_id, sequence_number, event) VALUES ($1, $2, $3) "
                   "ON CONFLICT DO NOTHING")
_FORGET = "DELETE FROM background_runs WHERE response_id = $1"
_ASK_CANCEL = ("UPDATE background_runs SET cancel_requested = true WHERE response_id = $1 AND lease_until > now() "
               "AND response_id IN (SELECT id FROM responses WHERE id = $1 AND tenant = $2) RETURNING owner")


class PostgresRunLeases:
    def __init__(self, database: PostgresDatabase, url: str, *, lease_seconds: float = 30.0,
                 owner: str | None = None) -> None:
        self._db = database
        self._url = url  # the listening connection is the replica's own, outside the pool
        self._lease_seconds = lease_seconds
        self.owner: str | None = owner or new_owner_id()
        self._listener: asyncpg.Connection | None = None
        self._on_cancel: Callable[[str], None] | None = None
        self._watchers = Watchers()
        self._closed = False

    @property
    def shared(self) -> bool:
        return True

    @property
    def lease_seconds(self) -> float:
        return self._lease_seconds

    # --- notifications ---------------------------------------------------------------------------------------

    async def start(self, on_cancel: Callable[[str], None]) -> None:
        self._on_cancel = on_cancel
        await self._listen()

    async def _listen(self) -> None:
        """(Re)open the listening connection; without it followers poll and cancels wait for a heartbeat."""
        if self._closed or (self._listener is not None and not self._listener.is_closed()):
            return
        try:
            conn = await asyncpg.connect(self._url, timeout=LISTEN_CONNECT_TIMEOUT)
            await conn.add_listener(EVENTS_CHANNEL, self._events_notified)
            await conn.add_listener(CANCEL_CHANNEL, self._cancel_notified)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("background_listen_failed", exc_info=True)
            return
        conn.add_termination_listener(self._listener_lost)
        for response_id in list(self._watchers.by_response):  # anything may have been missed while not listening
            self._watchers.wake(response_id)
        self._listener = conn

    def _listener_lost(self, conn: object) -> None:
        if not self._closed:
            log.warning("background_listen_connection_lost")
        self._listener = None

    def _events_notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._watchers.wake(str(payload))

    def _cancel_notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        if self._on_cancel is not None:
            self._on_cancel(str(payload))

    def watch(self, response_id: str) -> contextlib.AbstractAsyncContextManager[asyncio.Event]:
        return self._watchers.watch(response_id)

    async def close(self) -> None:
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.close(), timeout=5)

    # --- leases ----------------------------------------------------------------------------------------------

    async def claim(self, response_id: str) -> None:
        async with self._db.acquire("background_claim") as conn:
            await conn.execute(_CLAIM, response_id, self.owner, self._lease_seconds)

    async def renew(self, response_ids: list[str]) -> Renewal:
        await self._listen()  # the heartbeat also brings a lost listening connection back
        if not response_ids:
            return Renewal()
        async with self._db.acquire("background_renew") as conn:
            rows = await conn.fetch(_RENEW, self.owner, response_ids, self._lease_seconds)
        held = {str(row["response_id"]) for row in rows}
        return Renewal(lost=frozenset(set(response_ids) - held),
                       cancel_requested=frozenset(str(row["response_id"]) for row in rows if row["cancel_requested"]))

    async def release(self, response_id: str) -> None:
        """The run's end is stored: drop the lease and tell followers (the last events may already be read, but
        a canceller waits for the stored status, which only now says the run ended)."""
        async with self._db.transaction("background_release") as conn:
            await conn.execute(_RELEASE, response_id, self.owner)
            await conn.execute(_NOTIFY, EVENTS_CHANNEL, response_id)

    async def fail_abandoned(self, close: Closer) -> list[str]:
        ended: list[str] = []
        while True:
            async with self._db.transaction("background_sweep") as conn:
                rows = await conn.fetch(_SWEEP, SWEEP_BATCH)
                for row in rows:
                    await _end(conn, str(row["id"]), bytes(row["response"]), close)
            ended.extend(str(row["id"]) for row in rows)
            if len(rows) < SWEEP_BATCH:
                return ended

    async def take_abandoned(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The rows locked ``SKIP LOCKED`` and leased here in one transaction: a replica taking at once passes
        them by, and once committed they are held (the lease), so each run is taken by one replica."""
        async with self._db.transaction("background_take") as conn:
            rows = await conn.fetch(_TAKE, SWEEP_BATCH)
            for row in rows:
                await conn.execute(_CLAIM, str(row["id"]), self.owner, self._lease_seconds)
        return [(str(row["id"]), str(row["tenant"]), orjson.loads(bytes(row["response"]))) for row in rows]

    async def close_abandoned(self, response_id: str, close: Closer, *, tenant: str) -> dict[str, Any] | None:
        async with self._db.transaction("background_sweep") as conn:
            row = await conn.fetchrow(_ONE, response_id, tenant)
            if row is None:
                return None
            return await _end(conn, response_id, bytes(row["response"]), close)

    async def request_cancel(self, response_id: str, *, tenant: str) -> bool:
        async with self._db.transaction("background_cancel") as conn:
            owner = await conn.fetchval(_ASK_CANCEL, response_id, tenant)
            if owner is not None:
                await conn.execute(_NOTIFY, CANCEL_CHANNEL, response_id)
        return owner is not None


async def _end(conn: Connection, response_id: str, blob: bytes, close: Closer) -> dict[str, Any]:
    """In the caller's transaction, with the response row locked: store its terminal form and append the frame
    that ends its stream after the last stored event, and drop its lease."""
    response, frame = close(orjson.loads(blob))
    last = int(await conn.fetchval(_LAST, response_id))
    await conn.execute(_END, response_id, response.get("status"), orjson.dumps(response))
    await conn.execute(_TERMINAL_EVENT, response_id, last + 1, frame(last + 1))
    await conn.execute(_FORGET, response_id)
    return response
