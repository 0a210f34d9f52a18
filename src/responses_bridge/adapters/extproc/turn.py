"""Whose turn it is to answer on one ext_proc stream: the message loop's, or a drain's ending the stream.

The two must not interleave (a drain's last words never overtake the loop's replies), but only a drain ever
contends, once per stream at most. ``asyncio.Lock`` under ``async with`` costs every message two coroutines and a
look at its waiters (~45 bytecodes, most of a streamed chunk's door overhead besides the translation); here the
free turn is taken with one attribute test and given back with another, and only a contended take awaits. The
turn is handed over in order: while anyone waits, :meth:`take_now` refuses, and :meth:`give` passes the turn to
the first waiter without freeing it in between.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Turn:
    __slots__ = ("_waiters", "held")

    def __init__(self) -> None:
        self.held = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take_now(self) -> bool:
        """The turn, if it is free and nobody waits for it: True. Never suspends."""
        if self.held or self._waiters:
            return False
        self.held = True
        return True

    async def take(self) -> None:
        """The turn, once every earlier taker has given it back."""
        if self.take_now():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():  # handed over just as this take was cancelled: pass it on
                self.give()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def give(self) -> None:
        """Gives the turn back: to the first taker still waiting, else free."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the turn is its now: it stays held
                return
        self.held = False
