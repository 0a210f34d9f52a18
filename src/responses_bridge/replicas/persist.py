"""The chain map kept in the store too, so that another process finds a chain's replica: a background run resumed
by another process, a turn that lands on another worker of ``serve --workers`` or on another replica of the bridge
on the same database.

Off the request path where it can be: a binding is written behind, at once, by a task of its own (the bindings
made meanwhile go in the same batch; a queue of at most :data:`PENDING` — past it the oldest wait is dropped, its
chain found again by its prefix). On SQLite its write is queued before the response's own save, so the chain's next
turn — which needs that save too — finds it on any worker. The store is read only for a chain this process does
not know (its first turn here). Bounded by age: bindings older than
:data:`KEEP_SECONDS` are purged every :data:`PURGE_SECONDS` (a chain idle for a day finds its prefix evicted
anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Protocol

import structlog

FLUSH_SECONDS = 1.0
"""Seconds between two looks for bindings a failed write left (and for the purge)."""
PENDING = 10_000
KEEP_SECONDS = 86_400
PURGE_SECONDS = 600.0
PURGE_BATCH = 10_000

log = structlog.get_logger("responses_bridge.replicas")


class ChainStore(Protocol):
    """The store's side (store/base.py ``ReplicaChainStore``)."""

    async def find_replica(self, upstream: str, keys: Sequence[str]) -> str | None: ...

    async def bind_replicas(self, bindings: Sequence[tuple[str, str, str, int]]) -> None: ...

    async def purge_replica_chains(self, before: int, *, limit: int) -> int: ...


class ChainPersistence:
    """Write-behind of one process's chain bindings, and the look-up of a chain it does not know."""

    def __init__(self, store: ChainStore) -> None:
        self.store = store
        self._pending: dict[tuple[str, str], tuple[str, int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Task[None] | None = None
        self._purged_at = 0.0

    def bind(self, upstream: str, keys: Sequence[str], replica: str) -> None:
        at = int(time.time())
        pending = self._pending
        for key in keys:
            pending.pop((upstream, key), None)  # re-inserted: the newest last
            pending[(upstream, key)] = (replica, at)
        while len(pending) > PENDING:
            del pending[next(iter(pending))]
        if self._task is not None and (self._writing is None or self._writing.done()):
            self._writing = asyncio.get_running_loop().create_task(self._write(), name="replica-chains-write")

    async def _write(self) -> None:
        try:
            await self.flush()
        except Exception:  # a store outage: these bindings are lost (their chains found by prefix), not the process
            log.warning("replica_chain_write_failed", exc_info=True)

    async def find(self, upstream: str, keys: Sequence[str]) -> str | None:
        for key in keys:  # not yet written: this process's own, newer than the store's
            waiting = self._pending.get((upstream, key))
            if waiting is not None:
                return waiting[0]
        try:
            return await self.store.find_replica(upstream, keys)
        except Exception:  # the store unavailable: placed by prefix and load, as a first turn is
            log.warning("replica_chain_lookup_failed", upstream=upstream, exc_info=True)
            return None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="replica-chains")

    async def stop(self) -> None:
        task, self._task = self._task, None
        for running in (task, self._writing):
            if running is not None:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
        with contextlib.suppress(Exception):
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        await self.store.bind_replicas([(upstream, key, replica, at)
                                        for (upstream, key), (replica, at) in batch.items()])

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
                now = time.monotonic()
                if now - self._purged_at >= PURGE_SECONDS:
                    self._purged_at = now
                    await self.store.purge_replica_chains(int(time.time()) - KEEP_SECONDS, limit=PURGE_BATCH)
            except asyncio.CancelledError:
                raise
            except Exception:  # a store outage: these bindings are lost (their chains found by prefix), not the loop
                log.warning("replica_chain_write_failed", exc_info=True)
