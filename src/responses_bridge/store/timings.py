"""A stored response's (or chat completion's) timing as columns, the same for every store: ``ttft_ms`` and
``latency_ms`` (what the console's Logs sorts and filters on, without reading a document) and ``timing``, the whole
document (observability/timing.py) as JSON. The store keeps it and reads it back; it never interprets it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

NO_TIMING: tuple[None, None, None] = (None, None, None)


def timing_columns(timing: Mapping[str, Any] | None) -> tuple[float | None, float | None, bytes | None]:
    """``(ttft_ms, latency_ms, timing)`` of a row; all None for a response nobody timed."""
    if timing is None:
        return NO_TIMING
    ttft, latency = timing.get("ttft_ms"), timing.get("latency_ms")
    return (float(ttft) if isinstance(ttft, (int, float)) else None,
            float(latency) if isinstance(latency, (int, float)) else None, orjson.dumps(timing))


def timing_document(blob: bytes | memoryview | None) -> dict[str, Any] | None:
    """A ``timing`` column read back (None: the row has none)."""
    if blob is None:
        return None
    document = orjson.loads(bytes(blob))
    return document if isinstance(document, dict) else None
