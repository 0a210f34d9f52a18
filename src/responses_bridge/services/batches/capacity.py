"""When a batch's line may run: the one seam between the batch runner (runner.py) and the bridge's capacity.

Before it starts a line the runner enters ``gate.line_slot(tenant, batch_id)`` and holds it while the line runs
(its model calls, its tools, the writing of its result); it leaves it when the line is recorded. Whatever decides
how much of the bridge batches may use — a fixed number of lines at once, or only the capacity interactive
requests leave idle, shared fairly between batches and tenants — is a :class:`LineGate`; the runner knows nothing
else of it.

The HTTP door builds its runner with the runtime's gate (``Runtime.idle_capacity``: fairness/idle_capacity.py):
lines start only on the capacity interactive requests leave idle, fairly between tenants and batches. The gate here
is the plainest one, for a runner built without a runtime: at most :data:`DEFAULT_CONCURRENCY` lines at once,
first come first served (:func:`line_gate`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

DEFAULT_CONCURRENCY = 8
"""Lines of every batch running at once in one process, by default."""


class LineGate(Protocol):
    """What the runner asks before each line."""

    def line_slot(self, tenant: str, batch_id: str) -> AbstractAsyncContextManager[None]:
        """Entered (awaited) before the line starts, held while it runs, left once its result is recorded."""


class FixedLineGate:
    """At most ``concurrency`` lines at once, whoever's, in the order they asked."""

    def __init__(self, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)

    @contextlib.asynccontextmanager
    async def line_slot(self, tenant: str, batch_id: str) -> AsyncIterator[None]:
        async with self._slots:
            yield


def line_gate(concurrency: int = DEFAULT_CONCURRENCY) -> LineGate:
    """The plain gate (a runner built without a runtime); the door's is ``Runtime.idle_capacity``."""
    return FixedLineGate(concurrency)
