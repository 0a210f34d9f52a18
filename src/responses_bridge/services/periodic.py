"""A job a service runs every so often in the background (purges of expired files and containers): started with
the service, cancelled when it closes, and a failed run logged and retried at the next interval rather than ending
the loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


class Periodic:
    """``job`` every ``interval`` seconds (the first run after one interval); ``failure``: the log event of a
    failed run. An interval of 0 or less never starts."""

    def __init__(self, interval: float, job: Callable[[], Awaitable[object]], *, name: str, failure: str) -> None:
        self.interval = interval
        self._job = job
        self._name = name
        self._failure = failure
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._forever(), name=self._name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._job()
            except Exception:  # a failed run is retried at the next interval
                log.exception(self._failure)
