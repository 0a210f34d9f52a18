"""Server-sent events: an incremental decoder for upstream chunks and the encoder for our events.

Envoy and TCP split and merge upstream chunks anywhere, so the decoder keeps the unfinished tail and yields only
whole events. The encoder writes each event as one ``bytes`` so that no event is ever split across writes
(some clients' parsers lose an event whose ``data:`` line and blank line arrive in different reads).
"""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"[DONE]"
DONE_FRAME = b"data: [DONE]\n\n"


class SSEDecoder:
    """Feeds raw bytes in, returns the ``data`` payloads of the events completed so far."""

    __slots__ = ("_buffer", "_after_cr")

    def __init__(self) -> None:
        self._buffer = b""  # the unfinished tail, line endings already normalised to LF
        self._after_cr = False  # the last chunk ended with CR: an LF that starts the next one belongs to it

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._after_cr:
            if not chunk:
                return []
            self._after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            # A CR ends a line whatever follows, so the event it completes goes out now; only an LF at the start
            # of the next chunk (the second half of a CRLF) must then be dropped.
            self._after_cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk if self._buffer else chunk
        events = buffer.split(b"\n\n")
        self._buffer = events.pop()
        payloads: list[bytes] = []
        for event in events:
            data = _event_data(event)
            if data is not None:
                payloads.append(data)
        return payloads

    def flush(self) -> list[bytes]:
        """At end of stream: an event that lacks only its closing blank line still counts."""
        tail, self._buffer, self._after_cr = self._buffer.rstrip(b"\n"), b"", False
        data = _event_data(tail) if tail else None
        return [data] if data is not None else []

    @property
    def pending(self) -> int:
        return len(self._buffer)


def _event_data(event: bytes) -> bytes | None:
    if event.startswith(b"data:") and b"\n" not in event:  # the common case: one data line
        data = event[5:]
        return data[1:] if data.startswith(b" ") else data
    lines: list[bytes] = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data = line[5:]
            lines.append(data[1:] if data.startswith(b" ") else data)
    return b"\n".join(lines) if lines else None


def encode_event(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
