"""Writing an event log behind its readers, in batches: the writer of a background run's log
(responses/background_run.py) and of a session's log (agents/events.py).

Readers are served from memory at once; the store only has to catch up. Started at once, a writer wrote the first
frame of a burst alone, then the next few, then the rest: four or five round trips to the database for a 20-chunk
answer, and one per token for a model that sends a token every 30 ms — each a hop to the database's thread and a
transaction, paid for nothing, since no reader waits for them. So the writer waits :data:`WRITE_DELAY` after the
first unsaved frame and writes everything that came meanwhile in one go: at most about ten writes a second per log,
one for a whole burst. Whoever needs the frames durable now (a terminal event stored before it is shown, a run
ending, a delete) cuts the wait short with :meth:`WriteBehind.settle`, or writes them itself.

``write`` is nearly always a method of the writer's owner (the run, the session's log), which holds the writer: held
strongly, owner and writer were a cycle, and a background run's whole response (its output, its frames) stayed in
memory after it ended until a full collection of the cyclic collector, which an idle server never runs. So a method
is held weakly, and strongly only by the write scheduled (its task): the owner is kept while a write is due, exactly as
before, and freed by its reference count once none is.
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import Awaitable, Callable

WRITE_DELAY = 0.1  # seconds from a log's first unsaved frame to its write


class WriteBehind:
    """One log's writer task: ``write`` (which must not raise, and writes every unsaved frame) run once
    :data:`WRITE_DELAY` has passed since :meth:`soon` was first called, or at once when :meth:`settle` asks."""

    def __init__(self, write: Callable[[], Awaitable[None]], delay: float = WRITE_DELAY) -> None:
        self._write: Callable[[], Callable[[], Awaitable[None]] | None] = (
            weakref.WeakMethod(write) if inspect.ismethod(write) else lambda: write)
        self._delay = delay
        self.task: asyncio.Task[None] | None = None
        self._timer: asyncio.Future[None] | None = None
        self._hurried = False  # settle() came before the scheduled write began its wait

    def soon(self) -> None:
        """Frames are waiting: a write within the delay (the one already scheduled or running picks them up)."""
        if self.task is None or self.task.done():
            write = self._write()
            if write is None:  # its owner is gone: nobody is left to ask for the write
                return
            self._hurried = False
            self.task = asyncio.ensure_future(self._run(write))

    async def _run(self, write: Callable[[], Awaitable[None]]) -> None:
        if self._hurried:
            await write()
            return
        loop = asyncio.get_running_loop()
        timer = self._timer = loop.create_future()
        handle = loop.call_later(self._delay, _resolve, timer)
        try:
            await timer
        finally:
            handle.cancel()
            self._timer = None
        await write()

    def hurry(self) -> None:
        """A scheduled write starts now instead of at the end of its delay."""
        self._hurried = True
        _resolve(self._timer)

    async def settle(self) -> None:
        """The scheduled or running write, done (started now if it was waiting)."""
        self.hurry()
        if self.task is not None and not self.task.done():
            await asyncio.wait([self.task])


def _resolve(timer: asyncio.Future[None] | None) -> None:
    if timer is not None and not timer.done():
        timer.set_result(None)
