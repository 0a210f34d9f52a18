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
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from .base import EventLog

TerminalFrame = Callable[[int], bytes]
"""The SSE frame that ends a stream, for the sequence number the event log gives it."""

Closer = Callable[[dict[str, Any]], tuple[dict[str, Any], TerminalFrame]]
"""Turns a stored unfinished response into its terminal form (status, error) and the frame that ends its stream."""


@dataclass(frozen=True, slots=True)
class Renewal:
    """What a heartbeat learnt: runs whose lease this replica no longer holds (another replica failed them), and
    runs someone asked to cancel (the polling fallback for the cancel notification)."""

    lost: frozenset[str] = frozenset()
    cancel_requested: frozenset[str] = frozenset()


@dataclass
class _Watchers:
    by_response: dict[str, set[asyncio.Event]] = field(default_factory=dict)

    def wake(self, response_id: str) -> None:
        for event in self.by_response.get(response_id, ()):
            event.set()


class RunLeases(Protocol):
    @property
    def shared(self) -> bool:
        """True when other processes run background responses on the same database."""

    @property
    def lease_seconds(self) -> float:
        """How long a lease lasts without renewal; the heartbeat renews it several times within."""

    async def start(self, on_cancel: Callable[[str], None]) -> None:
        """Begin listening; ``on_cancel(response_id)`` is called when another process asks to cancel a run."""

    async def close(self) -> None: ...

    async def claim(self, response_id: str) -> None:
        """This process now runs ``response_id`` (called before its ``queued`` row is stored)."""

    async def renew(self, response_ids: list[str]) -> Renewal:
        """The heartbeat: extend this process's leases on ``response_ids``."""

    async def release(self, response_id: str) -> None:
        """The run ended here (its terminal state is stored, or it was deleted)."""

    async def fail_abandoned(self, close: Closer) -> list[str]:
        """Across tenants: workers only. End every run no live process holds with ``close``, each exactly once
        (its terminal event written once); returns their ids."""

    async def close_abandoned(self, response_id: str, close: Closer, *, tenant: str) -> dict[str, Any] | None:
        """End ``tenant``'s ``response_id`` with ``close`` if it is unfinished and no live process holds it; the
        closed response, or None when it is finished, still held, or not the tenant's."""

    async def request_cancel(self, response_id: str, *, tenant: str) -> bool:
        """Ask the process running ``tenant``'s ``response_id`` to cancel it; False when no live process holds
        it (or it is not the tenant's)."""

    def watch(self, response_id: str) -> AbstractAsyncContextManager[asyncio.Event]:
        """An event set whenever ``response_id``'s stored stream may have grown (cleared by the caller before
        each read, so a change after the read is never missed)."""


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
