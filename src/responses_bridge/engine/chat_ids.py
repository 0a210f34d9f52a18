"""A stored chat completion's id, in the answer the client gets: the bridge's own in place of the upstream's.

Backends do not make ids unique: Ollama numbers its completions (``chatcmpl-`` and a number below 1,000), so two
stored completions keyed by the upstream's id overwrite each other. The bridge keys them by an id it makes, and
the client must see that id to read the completion back; so the id is swapped in the bytes on their way, nothing
else touched: every ``"id":"<upstream's>"`` (with or without a space after the colon, as JSON encoders write
it) becomes ``"id":"<bridge's>"``. Inside a JSON string such a sequence is escaped (``\\"id\\"``), so only the
completion's own ``id`` fields match. Bytes that may be the start of a match split across two pieces are held
back until the next piece says (a few bytes; never an event's end, which is a blank line).
"""

from __future__ import annotations

import os
import time

import orjson


def chat_completion_id() -> str:
    """An id in OpenAI's shape for chat completions: the time in nanoseconds (fixed-width hex, so completions made
    within one second still list in the order they were made: lists sort by ``created``, then id), then 12 bytes
    from the OS random source (replicas never collide)."""
    return f"chatcmpl-{time.time_ns():016x}{os.urandom(12).hex()}"


class IdSwap:
    """Replaces ``upstream_id`` with ``own_id`` in the ``id`` fields of pieces fed in order."""

    __slots__ = ("_held", "_patterns")

    def __init__(self, upstream_id: str, own_id: str) -> None:
        theirs, ours = orjson.dumps(upstream_id), orjson.dumps(own_id)
        self._patterns = [(b'"id":' + theirs, b'"id":' + ours), (b'"id": ' + theirs, b'"id": ' + ours)]
        self._held = b""

    def feed(self, piece: bytes) -> bytes:
        data = self._swap(self._held + piece)
        keep = self._partial_tail(data)
        self._held = data[len(data) - keep:] if keep else b""
        return data[:len(data) - keep] if keep else data

    def end(self) -> bytes:
        held, self._held = self._held, b""
        return held

    def _swap(self, data: bytes) -> bytes:
        for theirs, ours in self._patterns:
            if theirs in data:
                data = data.replace(theirs, ours)
        return data

    def _partial_tail(self, data: bytes) -> int:
        """How many bytes at the end of ``data`` are a proper beginning of a pattern (0 almost always)."""
        longest = max(len(theirs) for theirs, _ in self._patterns) - 1
        for size in range(min(longest, len(data)), 0, -1):
            tail = data[-size:]
            if any(theirs.startswith(tail) for theirs, _ in self._patterns):
                return size
        return 0
