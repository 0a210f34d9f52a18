"""A call's live output sent to the client while the call runs (the hosted shell's printed lines), not at its end.

Moved out of run/server_tools_calls.py, which was over the module-size limit: pumping a call's events to the client
each time the call wakes it is a job of its own, needing nothing of the runner but its ``live`` sender. It must not
import server_tools_calls.py (which imports it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def flushing(send: Callable[[], Awaitable[None]] | None, wake: asyncio.Event, work: Awaitable[T]) -> T:
    """``work``, its events sent to the client (``send``) each time ``wake`` is set while it runs (a call's live
    output); the last write ends before this returns, so none is lost or overtaken. No ``send``: just ``work``."""
    if send is None:
        return await work
    running = True

    async def flush() -> None:
        while running:
            await wake.wait()
            wake.clear()
            await send()

    task = asyncio.ensure_future(flush())
    try:
        result = await work
    except BaseException:
        task.cancel()
        raise
    running = False
    wake.set()
    await task
    return result
