"""Prometheus metrics of the SQLite store: how long each operation takes, and whether writes are piling up.

The queue depth and the stall are read from the open stores when ``/metrics`` is scraped (not pushed on every
write), so an idle scrape of a stuck writer still shows how long it has been stuck.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Protocol

from prometheus_client import Gauge, Histogram

from ..observability import tracing
from ..observability.metrics import loop_observer, pulled


class _WriteQueue(Protocol):
    @property
    def write_queue_depth(self) -> int: ...

    def write_stall_seconds(self) -> float: ...


_OPEN: weakref.WeakSet[_WriteQueue] = weakref.WeakSet()

OPERATION_SECONDS = Histogram(
    "responses_bridge_store_operation_seconds",
    "Time of one store operation as its caller saw it (a save includes waiting for its group commit)",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
WRITE_QUEUE_DEPTH = Gauge("responses_bridge_store_write_queue_depth",
                          "Writes queued or running on the store's one write connection", multiprocess_mode="livesum")
WRITE_STALL_SECONDS = Gauge("responses_bridge_store_write_stall_seconds",
                            "How long the oldest queued or running write has been waiting (0 when none)",
                            multiprocess_mode="livemax")
pulled(WRITE_QUEUE_DEPTH, lambda: float(sum(store.write_queue_depth for store in list(_OPEN))))
pulled(WRITE_STALL_SECONDS, lambda: max((store.write_stall_seconds() for store in list(_OPEN)), default=0.0))


def track(store: _WriteQueue) -> None:
    """Report this store's write queue in the gauges while it is open."""
    _OPEN.add(store)


def untrack(store: _WriteQueue) -> None:
    _OPEN.discard(store)


_CHILDREN: dict[str, Callable[[float], None]] = {}
"""Each operation's child of the histogram, looked up once (``labels()`` takes a lock and builds a key every call);
bounded as the operations are: names in the code. Observed without the value's mutex (``loop_observer``): every
store call is awaited on the event loop's thread."""


class timed:  # lower case: used as the function it was, ``with timed(operation):``
    """Times the block, and traces it as a ``store <operation>`` span when tracing is on. A class rather than a
    generator context manager: every request's store operations (a save, a read) go through it."""

    __slots__ = ("_child", "_operation", "_span", "_started")

    def __init__(self, operation: str) -> None:
        child = _CHILDREN.get(operation)
        if child is None:
            child = _CHILDREN[operation] = loop_observer(OPERATION_SECONDS.labels(operation))
        self._child = child
        self._operation = operation
        self._span: AbstractContextManager[Any] | None = None

    def __enter__(self) -> None:
        self._started = time.perf_counter()
        if tracing.ENABLED:  # a store operation's span is exported, never kept (kept=False): none made otherwise
            operation = self._operation
            span = self._span = tracing.span(f"store {operation}", {"db.system.name": "sqlite",
                                                                    "db.operation.name": operation}, kept=False)
            span.__enter__()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            span, self._span = self._span, None
            if span is not None:
                span.__exit__(kind, error, trace)
        finally:
            self._child(time.perf_counter() - self._started)
