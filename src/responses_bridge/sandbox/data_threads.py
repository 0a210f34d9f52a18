"""The worker threads that reach a sandbox call's ``/mnt/data``, and the descriptor they reach it through.

The bridge reaches a call's ``/mnt/data`` as ``/proc/self/fd/N`` (call.py): a path that names whatever
descriptor holds the number N at the moment it is used. A thread cannot be cancelled: when the task that started
one (laying a container's files out, reading them back) is cancelled — its request gone, or its sandbox slot taken
back for another tenant (fairness/share.py) — the thread goes on. Were N closed meanwhile, the kernel would give the
number to the next descriptor opened, another call's ``/mnt/data`` among them, and the thread would write into, or
read from, another tenant's files. So the threads are counted, and N is closed only once the last of them ended.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class DataThreads:
    """The threads at work on one call's files; :meth:`close_when_idle` closes its descriptor after them."""

    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running: set[asyncio.Future[Any]] = set()

    async def run(self, work: Awaitable[T]) -> T:
        """``work`` (a coroutine awaiting a thread), counted until its thread ends — whether or not the caller
        is still waiting for it."""
        future = asyncio.ensure_future(work)
        self._running.add(future)
        future.add_done_callback(self._ended)
        return await asyncio.shield(future)

    def thread(self, function: Callable[..., T], *arguments: Any) -> Awaitable[T]:
        """``function(*arguments)`` in a worker thread, counted."""
        return self.run(asyncio.to_thread(function, *arguments))

    def _ended(self, future: asyncio.Future[Any]) -> None:
        self._running.discard(future)
        if not future.cancelled():
            future.exception()  # read: a caller cancelled meanwhile never will, and asyncio would log it as lost

    def close_when_idle(self, fd: int) -> None:
        """Close ``fd`` now if no thread is at work, else when the last one ends."""
        running = set(self._running)
        if not running:
            os.close(fd)
            return
        left = [len(running)]

        def one_ended(_: asyncio.Future[Any]) -> None:
            left[0] -= 1
            if not left[0]:
                os.close(fd)

        for future in running:
            future.add_done_callback(one_ended)
