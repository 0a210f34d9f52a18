"""A job run every so often in the background (purges of expired files and containers, retention sweeps, memory
trims): started with its owner, cancelled when it closes, and a failed run logged and retried at the next interval
rather than ending the loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


class Periodic:
    """``job`` every ``interval`` seconds, the first run after ``first_delay`` (default: one interval);
    ``failure``: the log event of a failed run, logged with its traceback at ``failure_level``. An interval of 0 or
    less never starts."""

    def __init__(self, interval: float, job: Callable[[], Awaitable[object]], *, name: str, failure: str,
                 first_delay: float | None = None, failure_level: str = "error") -> None:
        self.interval = interval
        self._job = job
        self._name = name
        self._failure = failure
        self._first_delay = interval if first_delay is None else first_delay
        self._failure_level = failure_level
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def purge(cls, kind: str, interval: float, job: Callable[[], Awaitable[object]]) -> Periodic:
        """The purge of one kind of expired object (``files``, ``containers``, ``uploads``): its task named
        ``<kind>-purge``, a failed run logged as ``<kind>_purge_failed``, the names every purge has."""
        return cls(interval, job, name=f"{kind}-purge", failure=f"{kind}_purge_failed")

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._forever(), name=self._name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None

    async def _forever(self) -> None:
        await asyncio.sleep(self._first_delay)
        while True:
            try:
                await self._job()
            except Exception:  # noqa: BLE001 - housekeeping never takes the process down: retried next interval
                getattr(log, self._failure_level)(self._failure, exc_info=True)
            await asyncio.sleep(self.interval)
