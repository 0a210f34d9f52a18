"""Who runs each background response: the seam between the background service and a store.

A background response is run by one process. With the embedded SQLite store that process is the only one using
the database, so at start every run still ``queued``/``in_progress`` belongs to a process that died, and nothing
else can be running one. With a database that several replicas share (PostgreSQL), each running background
response is *owned* by one replica through a lease (owner id + expiry, renewed by the owner's heartbeat): a
replica fails only runs whose lease expired, a follower on another replica reads the event log as it grows, and a
cancel asked of another replica is recorded for the owner to act on.

:class:`RunLeases` is what the background service asks of a store for this; :class:`LocalRunLeases` is the
single-process implementation over the SQLite event log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from ..base import EventLog
from ..records import Closer, Renewal


@dataclass
class _Watchers:
    by_response: dict[str, set[asyncio.Event]] = field(default_factory=dict)

    def wake(self, response_id: str) -> None:
        for event in self.by_response.get(response_id, ()):
            event.set()


class LocalRunLeases:
    """One process on its own database (SQLite): no lease to hold, every unfinished run is this process's.

    ``fail_abandoned`` at start fails every unfinished run (none can be running yet); later sweeps find none,
    since every run this process starts is in its memory until it ends."""

    def __init__(self, events: EventLog) -> None:
        self._events = events
        self._swept = False
        self._watchers = _Watchers()

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

    @asynccontextmanager
    async def watch(self, response_id: str) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self._watchers.by_response.setdefault(response_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._watchers.by_response.get(response_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._watchers.by_response[response_id]
