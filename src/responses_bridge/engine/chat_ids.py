"""A stored chat completion's id, in the answer the client gets: the bridge's own in place of the upstream's.

Backends do not make ids unique: Ollama numbers its completions (``chatcmpl-`` and a number below 1,000), so two
stored completions keyed by the upstream's id overwrite each other. The bridge keys them by an id it makes, and
the client must see that id to read the completion back; so the id is swapped in the bytes on their way, nothing
else touched: every ``"id":"<upstream's>"`` (with or without a space after the colon, as JSON encoders write
it) becomes ``"id":"<bridge's>"``. Inside a JSON string such a sequence is escaped (``\\"id\\"``), so only the
completion's own ``id`` fields match. A match split across two pieces is found as any is (net/stream_replace.py).
"""

from __future__ import annotations

import os
import time

import orjson

from ..net.stream_replace import StreamReplace


def chat_completion_id() -> str:
    """An id in OpenAI's shape for chat completions: the time in nanoseconds (fixed-width hex, so completions made
    within one second still list in the order they were made: lists sort by ``created``, then id), then 12 bytes
    from the OS random source (replicas never collide)."""
    return f"chatcmpl-{time.time_ns():016x}{os.urandom(12).hex()}"


class IdSwap(StreamReplace):
    """Replaces ``upstream_id`` with ``own_id`` in the ``id`` fields of pieces fed in order."""

    __slots__ = ()

    def __init__(self, upstream_id: str, own_id: str) -> None:
        theirs, ours = orjson.dumps(upstream_id), orjson.dumps(own_id)
        super().__init__([(b'"id":' + theirs, b'"id":' + ours), (b'"id": ' + theirs, b'"id": ' + ours)])
