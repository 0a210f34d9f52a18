"""Who waits for a background response's stored stream to grow: the followers a lease implementation wakes (on a
notification, a poll, or the end of a run here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Watchers:
    def __init__(self) -> None:
        self.by_response: dict[str, set[asyncio.Event]] = {}

    def wake(self, response_id: str) -> None:
        for event in self.by_response.get(response_id, ()):
            event.set()

    @asynccontextmanager
    async def watch(self, response_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set by :meth:`wake` for ``response_id`` while the block runs (``RunLeases.watch``)."""
        event = asyncio.Event()
        self.by_response.setdefault(response_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self.by_response.get(response_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self.by_response[response_id]
