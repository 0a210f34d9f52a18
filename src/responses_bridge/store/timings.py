"""A stored response's (or chat completion's) timing as columns, the same for every store: ``ttft_ms`` and
``latency_ms`` (what the console's Logs sorts and filters on, without reading a document) and ``timing``, the whole
document (observability/timing.py: ``[3, ttft ms, latency ms, …]``) as JSON. The store keeps it and reads it back;
it never interprets it beyond those two numbers."""

from __future__ import annotations

from typing import Any

import orjson

NO_TIMING: tuple[None, None, None] = (None, None, None)


def timing_columns(timing: Any) -> tuple[float | None, float | None, bytes | None]:
    """``(ttft_ms, latency_ms, timing)`` of a row; all None for a response nobody timed."""
    if not isinstance(timing, list) or len(timing) < 3:
        return NO_TIMING
    return timing[1], timing[2], orjson.dumps(timing)


def timing_document(blob: bytes | memoryview | None) -> Any:
    """A ``timing`` column read back (None: the row has none)."""
    if blob is None:
        return None
    return orjson.loads(bytes(blob))
